/* diskshelf: configuring curl handles for the HTTP transport, reading
 * secrets from files, and redacting credentials from URLs. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "text.h"

/* Abort a transfer when the layer is closing. */
static int
progress_cb (void *arg, curl_off_t dltotal, curl_off_t dlnow,
             curl_off_t ultotal, curl_off_t ulnow)
{
  atomic_bool *stopping = arg;

  return atomic_load (stopping) ? 1 : 0;
}

/* A new easy handle with every per-entry option set (URL, TLS,
 * credentials, timeouts, HTTP/2).  The caller adds per-request options.
 * Returns NULL on failure. */
CURL *
http_handle_new (const struct http_request_config *rc, atomic_bool *stopping)
{
  CURL *c = curl_easy_init ();

  if (c == NULL)
    return NULL;
  curl_easy_setopt (c, CURLOPT_URL, rc->url);
  curl_easy_setopt (c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (c, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt (c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt (c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt (c, CURLOPT_BUFFERSIZE, 512L * 1024);
  curl_easy_setopt (c, CURLOPT_SSL_VERIFYPEER, rc->verify ? 1L : 0L);
  curl_easy_setopt (c, CURLOPT_SSL_VERIFYHOST, rc->verify ? 2L : 0L);
  if (rc->ca_file)
    curl_easy_setopt (c, CURLOPT_CAINFO, rc->ca_file);
  if (rc->ca_path)
    curl_easy_setopt (c, CURLOPT_CAPATH, rc->ca_path);
  if (rc->user)
    {
      curl_easy_setopt (c, CURLOPT_USERNAME, rc->user);
      curl_easy_setopt (c, CURLOPT_PASSWORD,
                        rc->password ? rc->password : "");
      curl_easy_setopt (c, CURLOPT_HTTPAUTH, (long) CURLAUTH_BASIC);
    }
  if (rc->cookie)
    curl_easy_setopt (c, CURLOPT_COOKIE, rc->cookie);
  curl_easy_setopt (c, CURLOPT_USERAGENT, rc->user_agent);
  if (rc->headers)
    curl_easy_setopt (c, CURLOPT_HTTPHEADER, rc->headers);
  curl_easy_setopt (c, CURLOPT_CONNECTTIMEOUT, rc->timeout_s);
  /* A stall of `timeout` seconds ends a transfer. */
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt (c, CURLOPT_LOW_SPEED_TIME, rc->timeout_s);
  curl_easy_setopt (c, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt (c, CURLOPT_XFERINFOFUNCTION, progress_cb);
  curl_easy_setopt (c, CURLOPT_XFERINFODATA, stopping);
  return c;
}

/* Read a whole small file into a string.  Returns 0 or -errno. */
static int
slurp (const char *path, char **out)
{
  FILE *f = fopen (path, "re");
  size_t cap = 4096, n = 0;
  char *buf;

  if (f == NULL)
    return -errno;
  buf = malloc (cap);
  while (buf)
    {
      size_t r = fread (buf + n, 1, cap - n - 1, f);
      n += r;
      if (r == 0)
        break;
      if (n + 1 == cap)
        {
          char *nb = cap > (1 << 20) ? NULL : realloc (buf, cap * 2);
          if (nb == NULL)
            {
              free (buf);
              buf = NULL;
              break;
            }
          buf = nb;
          cap *= 2;
        }
    }
  fclose (f);
  if (buf == NULL)
    return -ENOMEM;
  buf[n] = '\0';
  *out = buf;
  return 0;
}

/* Read a secret (a password) from a file: its first line. */
int
http_read_secret (const char *what, const char *path, char **out)
{
  char *s;
  int r = slurp (path, &s);

  if (r < 0)
    return error_set (-r, "cannot read %s %s: %s", what, path,
                      strerror (-r));
  s[strcspn (s, "\r\n")] = '\0';
  *out = s;
  return 0;
}

/* Read "Name: value" lines (blank lines and # comments skipped) into a
 * header list. */
int
http_read_headers (const char *path, struct curl_slist **out)
{
  char *text, *save = NULL;
  int r = slurp (path, &text);

  if (r < 0)
    return error_set (-r, "cannot read header-file %s: %s", path,
                      strerror (-r));
  for (char *line = strtok_r (text, "\r\n", &save); line;
       line = strtok_r (NULL, "\r\n", &save))
    {
      struct curl_slist *l;
      if (line[0] == '#' || line[strspn (line, " \t")] == '\0')
        continue;
      if (strchr (line, ':') == NULL)
        {
          free (text);
          return error_set (EINVAL, "header-file %s: a line has no "
                            "'Name: value' form", path);
        }
      l = curl_slist_append (*out, line);
      if (l == NULL)
        {
          free (text);
          return error_set (ENOMEM, "out of memory");
        }
      *out = l;
    }
  free (text);
  return 0;
}

/* Read cookies into one Cookie header value: either "name=value" lines
 * (several pairs per line allowed) or a Netscape cookie file (7
 * tab-separated fields, "#HttpOnly_" lines included); other # lines are
 * comments.  All cookies go to the entry's server. */
int
http_read_cookies (const char *path, char **out)
{
  char *text, *save = NULL, *joined;
  size_t used = 0;
  int r = slurp (path, &text);

  if (r < 0)
    return error_set (-r, "cannot read cookie-file %s: %s", path,
                      strerror (-r));
  joined = calloc (1, strlen (text) * 2 + 1);
  if (joined == NULL)
    {
      free (text);
      return error_set (ENOMEM, "out of memory");
    }
  for (char *line = strtok_r (text, "\r\n", &save); line;
       line = strtok_r (NULL, "\r\n", &save))
    {
      char *field[7];
      int n = 0;

      line += strspn (line, " \t");
      if (strncmp (line, "#HttpOnly_", 10) == 0)
        line += 10;
      else if (line[0] == '#' || line[0] == '\0')
        continue;
      if (strchr (line, '\t'))
        {
          /* Netscape: domain, flag, path, secure, expiry, name, value. */
          for (char *p = line; n < 7; n++)
            {
              field[n] = p;
              p = strchr (p, '\t');
              if (p == NULL)
                {
                  n++;
                  break;
                }
              *p++ = '\0';
            }
          if (n != 7)
            continue;
          used += (size_t) sprintf (joined + used, "%s%s=%s",
                                    used ? "; " : "", field[5], field[6]);
          continue;
        }
      used += (size_t) sprintf (joined + used, "%s%s", used ? "; " : "",
                                line);
    }
  free (text);
  if (used == 0)
    {
      free (joined);
      joined = NULL;
    }
  *out = joined;
  return 0;
}

/* From a URL that may hold credentials, make the cache key (credentials
 * removed) and the display form (text_redact_url: credentials and
 * secret-looking query values shown as ***). */
int
http_redact_url (const char *url, char **key, char **display)
{
  CURLU *u = curl_url ();
  size_t dlen = strlen (url) + sizeof "***";  /* see text_redact_url */
  char *k = NULL;

  if (u == NULL)
    return -ENOMEM;
  if (curl_url_set (u, CURLUPART_URL, url, 0) != CURLUE_OK)
    {
      curl_url_cleanup (u);
      return -EINVAL;
    }
  curl_url_set (u, CURLUPART_USER, NULL, 0);
  curl_url_set (u, CURLUPART_PASSWORD, NULL, 0);
  curl_url_get (u, CURLUPART_URL, &k, 0);
  curl_url_cleanup (u);
  if (k == NULL)
    return -ENOMEM;
  *key = strdup (k);
  *display = malloc (dlen);
  curl_free (k);
  if (*key == NULL || *display == NULL)
    {
      free (*key);
      free (*display);
      return -ENOMEM;
    }
  text_redact_url (url, *display, dlen);
  return 0;
}

/* Split a URL into its scheme, host and port (the default port when
 * none is given).  Returns false when it does not parse. */
static bool
url_origin (const char *url, char **scheme, char **host, char **port)
{
  CURLU *u = curl_url ();
  bool ok;

  *scheme = *host = *port = NULL;
  if (u == NULL)
    return false;
  ok = curl_url_set (u, CURLUPART_URL, url, 0) == CURLUE_OK
    && curl_url_get (u, CURLUPART_SCHEME, scheme, 0) == CURLUE_OK
    && curl_url_get (u, CURLUPART_HOST, host, 0) == CURLUE_OK
    && curl_url_get (u, CURLUPART_PORT, port, CURLU_DEFAULT_PORT)
       == CURLUE_OK;
  curl_url_cleanup (u);
  return ok;
}

/* True when two URLs share scheme, host and port: the only place the
 * entry's credentials and headers go unless the user says otherwise
 * (what curl does with its own credentials). */
bool
http_same_origin (const char *a, const char *b)
{
  char *sa, *ha, *pa, *sb, *hb, *pb;
  bool oka = url_origin (a, &sa, &ha, &pa);
  bool okb = url_origin (b, &sb, &hb, &pb);
  bool same = oka && okb && strcasecmp (sa, sb) == 0
    && strcasecmp (ha, hb) == 0 && strcmp (pa, pb) == 0;

  curl_free (sa);
  curl_free (ha);
  curl_free (pa);
  curl_free (sb);
  curl_free (hb);
  curl_free (pb);
  return same;
}

/* True when a URL's scheme is https. */
bool
http_is_https (const char *url)
{
  return strncasecmp (url, "https://", 8) == 0;
}

/* Forget the entry's user, password, cookies and extra headers: the
 * object lives on another origin than the one they were meant for. */
static void
drop_credentials (struct http_request_config *rc)
{
  free (rc->user);
  free (rc->password);
  free (rc->cookie);
  curl_slist_free_all (rc->headers);
  rc->user = rc->password = rc->cookie = NULL;
  rc->headers = NULL;
}

/* Take one redirect (at open) to target: refuse https -> http, and keep the
 * credentials only while the origin stays the same (unless
 * send-credentials-on-redirect = yes).  target is copied. */
int
http_redirect (struct http_request_config *rc, const char *target)
{
  char *copy, *key, *shown;

  if (http_redact_url (target, &key, &shown) < 0)
    return error_set (EIO, "http: %s: %s: the server redirects to an "
                      "invalid URL", rc->entry_name, rc->display);
  free (key);
  if (http_is_https (rc->url) && !http_is_https (target))
    {
      error_set (EACCES, "http: %s: %s redirects from https to %s; refused "
                 "(the data and credentials would travel unprotected): "
                 "fix the server, or set source = to the URL you trust",
                 rc->entry_name, rc->display, shown);
      free (shown);
      return -EACCES;
    }
  if (!rc->credentials_on_redirect
      && !http_same_origin (rc->url, target)
      && (rc->user || rc->cookie || rc->headers))
    {
      log_warning ("http: %s: %s redirects to another host (%s); user, "
                   "password, cookies and headers are not sent there (set "
                   "send-credentials-on-redirect = yes to send them)",
                   rc->entry_name, rc->display, shown);
      drop_credentials (rc);
    }
  free (shown);
  copy = strdup (target);
  if (copy == NULL)
    return error_set (ENOMEM, "http: out of memory");
  free (rc->url);
  rc->url = copy;
  return 0;
}
