/* diskshelf nbd: parsing NBD URIs (NetworkBlockDevice/nbd doc/uri.md):
 *   nbd[s][+unix|+vsock]://[user@][host][:port][/export][?key=value&...]
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The schemes we accept, with their transport and TLS requirement. */
static const struct
{
  const char *name;
  enum nbd_transport transport;
  bool tls;
} schemes[] = {
  { "nbd", NBD_TRANSPORT_TCP, false },
  { "nbds", NBD_TRANSPORT_TCP, true },
  { "nbd+unix", NBD_TRANSPORT_UNIX, false },
  { "nbds+unix", NBD_TRANSPORT_UNIX, true },
  { "nbd+vsock", NBD_TRANSPORT_VSOCK, false },
  { "nbds+vsock", NBD_TRANSPORT_VSOCK, true },
};

/* Value of one hex digit, or -1. */
static int
hexval (char ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

/* Percent-decode src[0..len) into a new string; NUL bytes are refused. */
static int
decode (const char *src, size_t len, const char *what, char **out)
{
  char *dst = malloc (len + 1);
  size_t i, j = 0;

  if (dst == NULL)
    return nbd_set_error (ENOMEM, "nbd uri: out of memory");
  for (i = 0; i < len; i++)
    {
      if (src[i] == '%')
        {
          int hi = i + 2 < len ? hexval (src[i + 1]) : -1;
          int lo = i + 2 < len ? hexval (src[i + 2]) : -1;

          if (hi < 0 || lo < 0)
            {
              free (dst);
              return nbd_set_error (EINVAL,
                                    "nbd uri: bad percent-escape in %s", what);
            }
          if (hi == 0 && lo == 0)
            {
              free (dst);
              return nbd_set_error (EINVAL,
                                    "nbd uri: %%00 (NUL) is not allowed in %s",
                                    what);
            }
          dst[j++] = (char) (hi * 16 + lo);
          i += 2;
        }
      else
        dst[j++] = src[i];
    }
  dst[j] = '\0';
  *out = dst;
  return 0;
}

/* Parse a decimal number in [0, max] strictly. */
static int
parse_number (const char *s, size_t len, unsigned long max,
              unsigned long *out)
{
  unsigned long v = 0;
  size_t i;

  if (len == 0 || len > 10)
    return -1;
  for (i = 0; i < len; i++)
    {
      if (s[i] < '0' || s[i] > '9')
        return -1;
      v = v * 10 + (unsigned long) (s[i] - '0');
    }
  if (v > max)
    return -1;
  *out = v;
  return 0;
}

/* Free a parsed URI. */
void
nbd_uri_free (struct nbd_uri *u)
{
  if (u == NULL)
    return;
  free (u->user);
  free (u->host);
  free (u->export_name);
  free (u->socket);
  free (u->tls_certificates);
  free (u->tls_psk_file);
  free (u->tls_hostname);
  free (u);
}

/* True if text begins with one of our schemes and "://". */
bool
nbd_uri_is_nbd (const char *text)
{
  size_t i;

  for (i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
    {
      size_t n = strlen (schemes[i].name);
      if (strncmp (text, schemes[i].name, n) == 0
          && strncmp (text + n, "://", 3) == 0)
        return true;
    }
  return false;
}

/* Store one decoded query parameter into u. */
static int
set_param (struct nbd_uri *u, char *key, char *value)
{
  char **slot = NULL;

  if (strcmp (key, "socket") == 0)
    slot = &u->socket;
  else if (strcmp (key, "tls-certificates") == 0)
    slot = &u->tls_certificates;
  else if (strcmp (key, "tls-psk-file") == 0)
    slot = &u->tls_psk_file;
  else if (strcmp (key, "tls-hostname") == 0)
    slot = &u->tls_hostname;
  else if (strcmp (key, "tls-verify-peer") == 0)
    {
      if (u->tls_verify_peer != -1)
        return nbd_set_error (EINVAL, "nbd uri: tls-verify-peer given twice");
      if (strcmp (value, "1") == 0 || strcmp (value, "true") == 0)
        u->tls_verify_peer = 1;
      else if (strcmp (value, "0") == 0 || strcmp (value, "false") == 0)
        u->tls_verify_peer = 0;
      else
        return nbd_set_error (EINVAL,
                              "nbd uri: tls-verify-peer must be 0 or 1");
      free (value);
      free (key);
      return 0;
    }
  else if (strcmp (key, "tls-type") == 0)
    {
      if (strcmp (value, "x509") != 0 && strcmp (value, "psk") != 0)
        return nbd_set_error (EINVAL,
                              "nbd uri: tls-type must be x509 or psk");
      free (value);
      free (key);
      return 0;
    }
  else if (strncmp (key, "x-", 2) == 0)
    {
      /* Experimental keys of other clients: ignored, as uri.md allows. */
      free (value);
      free (key);
      return 0;
    }
  else
    return nbd_set_error (EINVAL, "nbd uri: unknown query parameter '%s' "
                          "(known: socket, tls-certificates, tls-psk-file, "
                          "tls-hostname, tls-verify-peer)", key);
  if (*slot)
    return nbd_set_error (EINVAL, "nbd uri: %s given twice", key);
  if (value[0] == '\0')
    return nbd_set_error (EINVAL, "nbd uri: %s is empty", key);
  *slot = value;
  free (key);
  return 0;
}

/* Parse the query string q[0..len): key=value pairs split on & or ;. */
static int
parse_query (struct nbd_uri *u, const char *q, size_t len)
{
  size_t i = 0;

  while (i < len)
    {
      size_t end = i, eq;
      char *key = NULL, *value = NULL;
      int r;

      while (end < len && q[end] != '&' && q[end] != ';')
        end++;
      if (end == i)
        {
          i++;
          continue;
        }
      for (eq = i; eq < end && q[eq] != '='; eq++)
        ;
      if (eq == end)
        return nbd_set_error (EINVAL, "nbd uri: query parameter without "
                              "'=': %.*s", (int) (end - i), q + i);
      r = decode (q + i, eq - i, "a query key", &key);
      if (r < 0)
        return r;
      r = decode (q + eq + 1, end - eq - 1, "a query value", &value);
      if (r < 0)
        {
          free (key);
          return r;
        }
      r = set_param (u, key, value);
      if (r < 0)
        {
          free (key);
          free (value);
          return r;
        }
      i = end + 1;
    }
  return 0;
}

/* Parse the authority a[0..len): [user@]host[:port]. */
static int
parse_authority (struct nbd_uri *u, const char *a, size_t len)
{
  const char *at = memchr (a, '@', len);
  const char *host, *end = a + len, *colon = NULL;
  unsigned long v;
  int r;

  if (at)
    {
      /* The last '@' ends the userinfo. */
      const char *p;
      for (p = at; p < end; p++)
        if (*p == '@')
          at = p;
      r = decode (a, (size_t) (at - a), "the user name", &u->user);
      if (r < 0)
        return r;
      if (u->user[0] == '\0')
        return nbd_set_error (EINVAL, "nbd uri: empty user name");
      host = at + 1;
    }
  else
    host = a;

  if (host < end && *host == '[')
    {
      const char *close = memchr (host, ']', (size_t) (end - host));
      if (close == NULL)
        return nbd_set_error (EINVAL, "nbd uri: unterminated '[' in host");
      r = decode (host + 1, (size_t) (close - host - 1), "the host",
                  &u->host);
      if (r < 0)
        return r;
      if (close + 1 < end)
        {
          if (close[1] != ':')
            return nbd_set_error (EINVAL, "nbd uri: junk after ']'");
          colon = close + 1;
        }
    }
  else
    {
      colon = memchr (host, ':', (size_t) (end - host));
      if ((colon ? colon : end) > host)
        {
          r = decode (host, (size_t) ((colon ? colon : end) - host),
                      "the host", &u->host);
          if (r < 0)
            return r;
        }
    }
  if (colon)
    {
      if (parse_number (colon + 1, (size_t) (end - colon - 1), 65535, &v) < 0
          || v == 0)
        return nbd_set_error (EINVAL, "nbd uri: bad port '%.*s'",
                              (int) (end - colon - 1), colon + 1);
      u->port = (uint16_t) v;
    }

  if (u->transport == NBD_TRANSPORT_VSOCK && u->host)
    {
      if (parse_number (u->host, strlen (u->host), UINT32_MAX, &v) < 0)
        return nbd_set_error (EINVAL, "nbd uri: vsock host must be a "
                              "numeric CID, not '%s'", u->host);
      u->cid = (uint32_t) v;
    }
  return 0;
}

/* Parse text into a new struct nbd_uri. */
int
nbd_uri_parse (const char *text, struct nbd_uri **out)
{
  struct nbd_uri *u;
  const char *p = NULL, *auth, *path, *query, *end;
  size_t i;
  int r;

  *out = NULL;
  u = calloc (1, sizeof *u);
  if (u == NULL)
    return nbd_set_error (ENOMEM, "nbd uri: out of memory");
  u->port = NBD_DEFAULT_PORT;
  u->cid = 2;
  u->tls_verify_peer = -1;

  for (i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
    {
      size_t n = strlen (schemes[i].name);
      if (strncmp (text, schemes[i].name, n) == 0
          && strncmp (text + n, "://", 3) == 0)
        {
          u->transport = schemes[i].transport;
          u->tls = schemes[i].tls;
          p = text + n + 3;
          break;
        }
    }
  if (p == NULL)
    {
      r = nbd_set_error (EINVAL, "nbd uri: '%s' does not start with nbd://, "
                         "nbds://, nbd+unix://, nbds+unix:// or nbd+vsock://",
                         text);
      goto fail;
    }
  if (strchr (p, '#'))
    {
      r = nbd_set_error (EINVAL, "nbd uri: a fragment (#) is not allowed");
      goto fail;
    }

  end = p + strlen (p);
  auth = p;
  path = auth + strcspn (auth, "/?");
  query = strchr (path, '?');
  if (query == NULL)
    query = end;

  r = parse_authority (u, auth, (size_t) (path - auth));
  if (r < 0)
    goto fail;
  if (path < query && *path == '/')
    r = decode (path + 1, (size_t) (query - path - 1), "the export name",
                &u->export_name);
  else
    r = decode ("", 0, "the export name", &u->export_name);
  if (r < 0)
    goto fail;
  if (strlen (u->export_name) > NBD_MAX_STRING)
    {
      r = nbd_set_error (EINVAL, "nbd uri: export name longer than %d bytes",
                         NBD_MAX_STRING);
      goto fail;
    }
  if (query < end)
    {
      r = parse_query (u, query + 1, (size_t) (end - query - 1));
      if (r < 0)
        goto fail;
    }

  if (u->transport == NBD_TRANSPORT_UNIX && u->socket == NULL)
    {
      r = nbd_set_error (EINVAL, "nbd uri: %s needs ?socket=PATH",
                         u->tls ? "nbds+unix://" : "nbd+unix://");
      goto fail;
    }
  if (u->transport == NBD_TRANSPORT_UNIX && u->host)
    {
      r = nbd_set_error (EINVAL, "nbd uri: a +unix URI takes no host "
                         "(write nbd+unix:///export?socket=PATH)");
      goto fail;
    }
  if (u->transport != NBD_TRANSPORT_UNIX && u->socket)
    {
      r = nbd_set_error (EINVAL, "nbd uri: socket= is only for +unix URIs");
      goto fail;
    }
  if (!u->tls && (u->tls_certificates || u->tls_psk_file || u->tls_hostname
                  || u->tls_verify_peer != -1))
    {
      r = nbd_set_error (EINVAL, "nbd uri: tls-* parameters need an nbds "
                         "scheme (nbds://, nbds+unix://)");
      goto fail;
    }
  if (u->tls_certificates && u->tls_psk_file)
    {
      r = nbd_set_error (EINVAL, "nbd uri: give tls-certificates or "
                         "tls-psk-file, not both");
      goto fail;
    }
  *out = u;
  return 0;

 fail:
  nbd_uri_free (u);
  return r;
}
