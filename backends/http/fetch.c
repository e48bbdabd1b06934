/* diskshelf: one HTTP range GET, with every check on the response:
 * status 206, a Content-Range that matches the request and the size,
 * and the validators of the first response (If-Range makes a changed
 * object come back as 200, which is refused). */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "text.h"

/* Where one response goes, and what its headers said. */
struct sink
{
  CURL *c;
  char *buf;
  size_t len, got;
  bool bad_status;           /* the body of a non-206 response began */
  bool overflow;             /* more bytes than asked for */
  char content_range[128];
  char etag[256];
  char last_modified[128];
};

/* Keep the headers that the checks need; a new status line (after a
 * 100 Continue, say) starts afresh. */
static size_t
header_cb (char *buffer, size_t size, size_t nitems, void *arg)
{
  struct sink *s = arg;
  size_t n = size * nitems;

  if (n >= 5 && strncmp (buffer, "HTTP/", 5) == 0)
    {
      s->content_range[0] = s->etag[0] = s->last_modified[0] = '\0';
      return n;
    }
  http_header_value (buffer, n, "content-range", s->content_range,
                   sizeof s->content_range);
  http_header_value (buffer, n, "etag", s->etag, sizeof s->etag);
  http_header_value (buffer, n, "last-modified", s->last_modified,
                   sizeof s->last_modified);
  return n;
}

/* Copy body bytes into the chunk buffer; refuse a body that is not the
 * partial content asked for. */
static size_t
write_cb (char *ptr, size_t size, size_t nmemb, void *arg)
{
  struct sink *s = arg;
  size_t n = size * nmemb;

  if (s->got == 0)
    {
      long code = 0;
      curl_easy_getinfo (s->c, CURLINFO_RESPONSE_CODE, &code);
      if (code != 206)
        {
          s->bad_status = true;
          return 0;
        }
    }
  if (n > s->len - s->got)
    {
      s->overflow = true;
      return 0;
    }
  memcpy (s->buf + s->got, ptr, n);
  s->got += n;
  return n;
}

/* Parse "bytes A-B/T" strictly. */
static bool
parse_content_range (const char *text, uint64_t *a, uint64_t *b, uint64_t *t)
{
  const char *p = text;
  char *end;

  if (strncasecmp (p, "bytes ", 6) != 0)
    return false;
  p += 6;
  if (!isdigit ((unsigned char) *p))
    return false;
  errno = 0;
  *a = strtoull (p, &end, 10);
  if (errno || *end != '-' || !isdigit ((unsigned char) end[1]))
    return false;
  *b = strtoull (end + 1, &end, 10);
  if (errno || *end != '/' || !isdigit ((unsigned char) end[1]))
    return false;
  *t = strtoull (end + 1, &end, 10);
  return errno == 0 && *end == '\0';
}

/* True when a curl error is worth retrying (the network or the server
 * may come back); TLS trust problems and bad URLs are not. */
static bool
retryable (CURLcode res)
{
  switch (res)
    {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP3:
      return true;
    default:
      return false;
    }
}

/* Fetch [offset, offset+len) into buf once.  On anything but FETCH_OK
 * a reason is written into why. */
enum fetch_verdict
http_fetch_once (const struct http_request_config *rc, CURL *c, char *buf,
                 uint64_t offset, size_t len, char *why, size_t whylen)
{
  struct sink s = { .c = c, .buf = buf, .len = len };
  char range[64], errbuf[CURL_ERROR_SIZE] = "";
  uint64_t a, b, t;
  CURLcode res;
  long code = 0;

  snprintf (range, sizeof range, "%" PRIu64 "-%" PRIu64, offset,
            offset + len - 1);
  curl_easy_setopt (c, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt (c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt (c, CURLOPT_RANGE, range);
  curl_easy_setopt (c, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt (c, CURLOPT_WRITEDATA, &s);
  curl_easy_setopt (c, CURLOPT_HEADERFUNCTION, header_cb);
  curl_easy_setopt (c, CURLOPT_HEADERDATA, &s);
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, errbuf);
  res = curl_easy_perform (c);
  curl_easy_setopt (c, CURLOPT_ERRORBUFFER, NULL);
  curl_easy_getinfo (c, CURLINFO_RESPONSE_CODE, &code);

  if (res != CURLE_OK && !(res == CURLE_WRITE_ERROR && s.bad_status))
    {
      if (s.overflow)
        {
          snprintf (why, whylen, "the server sent more than the %zu bytes "
                    "asked for at %" PRIu64, len, offset);
          return FETCH_CHANGED;
        }
      snprintf (why, whylen, "%s", errbuf[0] ? errbuf
                : curl_easy_strerror (res));
      return retryable (res) ? FETCH_RETRY : FETCH_FATAL;
    }
  if (code == 200 && (rc->etag || rc->last_modified))
    {
      snprintf (why, whylen, "the server sent the whole object instead of "
                "a range: it changed since it was opened");
      return FETCH_CHANGED;
    }
  if (code == 200)
    {
      snprintf (why, whylen, "the server ignored the Range header");
      return FETCH_FATAL;
    }
  if (code == 412 || code == 416)
    {
      snprintf (why, whylen, "HTTP %ld: the object changed since it was "
                "opened", code);
      return FETCH_CHANGED;
    }
  if (code >= 500 || code == 408 || code == 429)
    {
      snprintf (why, whylen, "HTTP %ld", code);
      return FETCH_RETRY;
    }
  if (code != 206)
    {
      snprintf (why, whylen, "HTTP %ld", code);
      return FETCH_FATAL;
    }
  if (!parse_content_range (s.content_range, &a, &b, &t)
      || a != offset || b != offset + len - 1)
    {
      char shown[4 * sizeof s.content_range];
      snprintf (why, whylen, "Content-Range '%s' does not match the "
                "request %s", text_escape (shown, sizeof shown,
                                           s.content_range,
                                           strlen (s.content_range)),
                range);
      return FETCH_FATAL;
    }
  if (t != rc->size)
    {
      snprintf (why, whylen, "the size changed from %" PRIu64 " to %"
                PRIu64, rc->size, t);
      return FETCH_CHANGED;
    }
  if ((rc->etag && s.etag[0] && strcmp (rc->etag, s.etag) != 0)
      || (rc->last_modified && s.last_modified[0]
          && strcmp (rc->last_modified, s.last_modified) != 0))
    {
      char etag[4 * sizeof s.etag], lm[4 * sizeof s.last_modified];
      snprintf (why, whylen, "ETag/Last-Modified changed (%s, %s)",
                text_escape (etag, sizeof etag, s.etag, strlen (s.etag)),
                text_escape (lm, sizeof lm, s.last_modified,
                             strlen (s.last_modified)));
      return FETCH_CHANGED;
    }
  if (s.got != len)
    {
      snprintf (why, whylen, "short body: %zu of %zu bytes", s.got, len);
      return FETCH_RETRY;
    }
  return FETCH_OK;
}
