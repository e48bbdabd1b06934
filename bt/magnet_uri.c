/* diskshelf bt: magnet URIs (xt=urn:btih: in hex or base32, dn, tr,
 * x.pe) and the torrent made from fetched metadata (see bt.h; the fetch
 * itself is magnet.c).
 *
 * Thread model: pure functions over their arguments.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bt.h"
#include "error.h"

#define MAX_MAGNET_LIST 64      /* tr= or x.pe= values kept */

/* ---- URI parsing ---- */

static int
hex_value (int c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Percent-decode len bytes of text (and '+' as space if plus_space:
 * dn= is often form-encoded, a tracker URL's '+' is its own) into a new
 * string; NULL on a bad escape, a NUL byte or no memory. */
static char *
percent_decode (const char *text, size_t len, bool plus_space)
{
  char *out = malloc (len + 1), *o = out;
  if (out == NULL)
    return NULL;
  for (size_t i = 0; i < len; i++)
    {
      if (text[i] == '%')
        {
          int hi = i + 2 < len ? hex_value (text[i + 1]) : -1;
          int lo = i + 2 < len ? hex_value (text[i + 2]) : -1;
          if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            {
              free (out);
              return NULL;
            }
          *o++ = (char) (hi << 4 | lo);
          i += 2;
        }
      else
        *o++ = plus_space && text[i] == '+' ? ' ' : text[i];
    }
  *o = '\0';
  return out;
}

/* Decode the info-hash of xt=urn:btih:VALUE (40 hex or 32 base32). */
static int
parse_btih (const char *v, size_t len, uint8_t out[20])
{
  if (len == 40)
    {
      for (size_t i = 0; i < 20; i++)
        {
          int hi = hex_value (v[2 * i]), lo = hex_value (v[2 * i + 1]);
          if (hi < 0 || lo < 0)
            return error_set (EINVAL, "magnet: info-hash \"%.*s\" is not "
                              "hex", (int) len, v);
          out[i] = (uint8_t) (hi << 4 | lo);
        }
      return 0;
    }
  if (len == 32)
    {
      /* RFC 4648 base32: 32 characters of 5 bits are exactly 160. */
      uint64_t acc = 0;
      unsigned bits = 0;
      size_t n = 0;
      for (size_t i = 0; i < 32; i++)
        {
          int c = v[i], d;
          if (c >= 'A' && c <= 'Z')
            d = c - 'A';
          else if (c >= 'a' && c <= 'z')
            d = c - 'a';
          else if (c >= '2' && c <= '7')
            d = c - '2' + 26;
          else
            return error_set (EINVAL, "magnet: info-hash \"%.*s\" is not "
                              "base32", (int) len, v);
          acc = acc << 5 | (unsigned) d;
          bits += 5;
          if (bits >= 8)
            {
              out[n++] = (uint8_t) (acc >> (bits - 8));
              bits -= 8;
            }
        }
      return 0;
    }
  return error_set (EINVAL, "magnet: info-hash \"%.*s\" is neither 40 hex "
                    "nor 32 base32 characters", (int) (len > 64 ? 64 : len),
                    v);
}

/* Append a decoded value to a list of at most MAX_MAGNET_LIST. */
static int
list_add (char ***list, size_t *count, const char *v, size_t len,
          const char *what)
{
  if (*count >= MAX_MAGNET_LIST)
    return error_set (EINVAL, "magnet: more than %d %s", MAX_MAGNET_LIST,
                      what);
  char *s = percent_decode (v, len, false);
  if (s == NULL)
    return error_set (EINVAL, "magnet: bad %%-escape in %s", what);
  char **l = realloc (*list, (*count + 1) * sizeof *l);
  if (l == NULL)
    {
      free (s);
      return error_set (ENOMEM, "magnet: out of memory");
    }
  l[(*count)++] = s;
  *list = l;
  return 0;
}

void
bt_magnet_free (struct bt_magnet *m)
{
  if (m == NULL)
    return;
  free (m->name);
  for (size_t i = 0; i < m->tracker_count; i++)
    free (m->trackers[i]);
  free (m->trackers);
  for (size_t i = 0; i < m->peer_count; i++)
    free (m->peers[i]);
  free (m->peers);
  free (m);
}

int
bt_magnet_parse (const char *uri, struct bt_magnet **out)
{
  if (strncasecmp (uri, "magnet:?", 8) != 0)
    return error_set (EINVAL, "magnet: \"%.40s\" does not start with "
                      "magnet:?", uri);
  struct bt_magnet *m = calloc (1, sizeof *m);
  if (m == NULL)
    return error_set (ENOMEM, "magnet: out of memory");
  bool have_hash = false;
  int r = 0;
  for (const char *p = uri + 8; *p && r == 0;)
    {
      size_t len = strcspn (p, "&");
      const char *eq = memchr (p, '=', len);
      if (eq != NULL)
        {
          size_t klen = eq - p, vlen = len - klen - 1;
          const char *v = eq + 1;
          if (klen == 2 && strncmp (p, "xt", 2) == 0
              && vlen > 9 && strncasecmp (v, "urn:btih:", 9) == 0)
            {
              if (have_hash)
                r = error_set (EINVAL, "magnet: more than one btih "
                               "info-hash");
              else
                r = parse_btih (v + 9, vlen - 9, m->info_hash);
              have_hash = true;
            }
          else if (klen == 2 && strncmp (p, "dn", 2) == 0 && !m->name)
            {
              m->name = percent_decode (v, vlen, true);
              if (m->name == NULL)
                r = error_set (EINVAL, "magnet: bad %%-escape in dn");
            }
          else if (klen == 2 && strncmp (p, "tr", 2) == 0)
            r = list_add (&m->trackers, &m->tracker_count, v, vlen,
                          "trackers (tr)");
          else if (klen == 4 && strncmp (p, "x.pe", 4) == 0)
            r = list_add (&m->peers, &m->peer_count, v, vlen,
                          "peers (x.pe)");
        }
      p += len;
      if (*p == '&')
        p++;
    }
  if (r == 0 && !have_hash)
    r = error_set (EINVAL, "magnet: no xt=urn:btih: info-hash (only "
                   "BitTorrent v1 magnets are supported)");
  if (r < 0)
    {
      bt_magnet_free (m);
      return r;
    }
  *out = m;
  return 0;
}

/* ---- Building the torrent ---- */

/* Append len bytes to a growing buffer. */
static int
buf_add (uint8_t **buf, size_t *used, size_t *cap, const void *p, size_t len)
{
  if (*used + len > *cap)
    {
      size_t n = (*used + len) * 2;
      uint8_t *b = realloc (*buf, n);
      if (b == NULL)
        return error_set (ENOMEM, "magnet: out of memory");
      *buf = b;
      *cap = n;
    }
  memcpy (*buf + *used, p, len);
  *used += len;
  return 0;
}

int
bt_magnet_metainfo (const struct bt_magnet *m, const uint8_t *info,
                    size_t len, struct bt_metainfo **out)
{
  uint8_t *b = NULL;
  size_t used = 0, cap = 0;
  char num[32];
  int r = buf_add (&b, &used, &cap, "d", 1);

  /* Keys in order: announce-list < info.  One tracker per tier. */
  if (r == 0 && m->tracker_count > 0)
    {
      r = buf_add (&b, &used, &cap, "13:announce-listl", 17);
      for (size_t i = 0; i < m->tracker_count && r == 0; i++)
        {
          size_t n = strlen (m->trackers[i]);
          int k = snprintf (num, sizeof num, "l%zu:", n);
          r = buf_add (&b, &used, &cap, num, k);
          if (r == 0)
            r = buf_add (&b, &used, &cap, m->trackers[i], n);
          if (r == 0)
            r = buf_add (&b, &used, &cap, "e", 1);
        }
      if (r == 0)
        r = buf_add (&b, &used, &cap, "e", 1);
    }
  if (r == 0)
    r = buf_add (&b, &used, &cap, "4:info", 6);
  if (r == 0)
    r = buf_add (&b, &used, &cap, info, len);
  if (r == 0)
    r = buf_add (&b, &used, &cap, "e", 1);
  if (r == 0)
    r = bt_metainfo_parse (b, used, out);
  free (b);
  if (r == 0 && memcmp ((*out)->info_hash, m->info_hash, 20) != 0)
    {
      bt_metainfo_free (*out);
      *out = NULL;
      return error_set (EPROTO, "metadata fails its SHA-1");
    }
  return r;
}
