/* diskshelf: what the HTTP transport reads from response headers, and
 * the checks on a range response.  Everything here is pure (no curl
 * handle, no I/O), treats every byte from the server as hostile, and is
 * fuzzed by fuzz/fuzz_http_headers.c. */
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "text.h"

/* Copy a response header's value, trimmed, into dst when the raw header
 * line (n bytes, not NUL-terminated) is the header `name`. */
void
http_header_value (const char *line, size_t n, const char *name, char *dst,
                   size_t dstlen)
{
  size_t nl = strlen (name);

  if (dstlen == 0 || n <= nl || strncasecmp (line, name, nl) != 0
      || line[nl] != ':')
    return;
  line += nl + 1;
  n -= nl + 1;
  while (n > 0 && (*line == ' ' || *line == '\t'))
    line++, n--;
  while (n > 0 && isspace ((unsigned char) line[n - 1]))
    n--;
  if (n >= dstlen)
    n = dstlen - 1;
  memcpy (dst, line, n);
  dst[n] = '\0';
}

/* Take one raw header line (n bytes) of a response: a status line
 * starts afresh (each redirect or 100 Continue has its own headers). */
void
http_headers_line (struct http_headers *hd, const char *line, size_t n)
{
  if (n >= 5 && strncmp (line, "HTTP/", 5) == 0)
    {
      hd->accept_ranges[0] = hd->etag[0] = hd->last_modified[0] = '\0';
      hd->content_range[0] = '\0';
      return;
    }
  http_header_value (line, n, "accept-ranges", hd->accept_ranges,
                     sizeof hd->accept_ranges);
  http_header_value (line, n, "etag", hd->etag, sizeof hd->etag);
  http_header_value (line, n, "last-modified", hd->last_modified,
                     sizeof hd->last_modified);
  http_header_value (line, n, "content-range", hd->content_range,
                     sizeof hd->content_range);
}

/* Parse the decimal at *p strictly (at least one digit, no overflow),
 * moving *p past it. */
static bool
parse_decimal (const char **p, uint64_t *out)
{
  uint64_t v = 0;

  if (!isdigit ((unsigned char) **p))
    return false;
  for (; isdigit ((unsigned char) **p); (*p)++)
    {
      unsigned d = (unsigned) (**p - '0');
      if (v > (UINT64_MAX - d) / 10)
        return false;
      v = v * 10 + d;
    }
  *out = v;
  return true;
}

/* Parse "bytes A-B/T" strictly. */
bool
http_parse_content_range (const char *text, uint64_t *a, uint64_t *b,
                          uint64_t *t)
{
  const char *p = text;

  if (strncasecmp (p, "bytes ", 6) != 0)
    return false;
  p += 6;
  if (!parse_decimal (&p, a) || *p++ != '-' || !parse_decimal (&p, b)
      || *p++ != '/' || !parse_decimal (&p, t))
    return false;
  return *p == '\0' && *a <= *b && *b < *t;
}

/* Parse the total of "bytes A-B/T" or "bytes * /T" (the answer to a
 * Range request at open, or a 416 naming the size). */
int
http_content_range_total (const char *text, uint64_t *total)
{
  const char *slash = strrchr (text, '/');
  const char *p;

  if (strncasecmp (text, "bytes ", 6) != 0 || slash == NULL)
    return -1;
  p = slash + 1;
  if (!parse_decimal (&p, total) || *p != '\0')
    return -1;
  return 0;
}

/* Judge a finished range response for [offset, offset+len): status code,
 * headers and the body bytes that arrived.  On anything but FETCH_OK a
 * reason (server text escaped) is written into why. */
enum fetch_verdict
http_check_response (const struct http_request_config *rc, long code,
                     const struct http_headers *hd, size_t got,
                     uint64_t offset, size_t len, char *why, size_t whylen)
{
  uint64_t a, b, t;

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
  if (len == 0 || offset > UINT64_MAX - len
      || !http_parse_content_range (hd->content_range, &a, &b, &t)
      || a != offset || b != offset + len - 1)
    {
      char shown[4 * sizeof hd->content_range];
      snprintf (why, whylen, "Content-Range '%s' does not match the "
                "request %" PRIu64 "-%" PRIu64,
                text_escape (shown, sizeof shown, hd->content_range,
                             strlen (hd->content_range)),
                offset, offset + len - 1);
      return FETCH_FATAL;
    }
  if (t != rc->size)
    {
      snprintf (why, whylen, "the size changed from %" PRIu64 " to %"
                PRIu64, rc->size, t);
      return FETCH_CHANGED;
    }
  if ((rc->etag && hd->etag[0] && strcmp (rc->etag, hd->etag) != 0)
      || (rc->last_modified && hd->last_modified[0]
          && strcmp (rc->last_modified, hd->last_modified) != 0))
    {
      char etag[4 * sizeof hd->etag], lm[4 * sizeof hd->last_modified];
      snprintf (why, whylen, "ETag/Last-Modified changed (%s, %s)",
                text_escape (etag, sizeof etag, hd->etag,
                             strlen (hd->etag)),
                text_escape (lm, sizeof lm, hd->last_modified,
                             strlen (hd->last_modified)));
      return FETCH_CHANGED;
    }
  if (got != len)
    {
      snprintf (why, whylen, "short body: %zu of %zu bytes", got, len);
      return FETCH_RETRY;
    }
  return FETCH_OK;
}
