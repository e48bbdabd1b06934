/* Fuzz harness: the HTTP transport's response handling
 * (backends/http/headers.c): header lines as curl hands them to the
 * header callbacks, the Content-Range parsers, and the verdict on a
 * range response.
 *
 * Input: 1 byte status selector, 8 bytes offset, 4 bytes length, 8 bytes
 * the object's size as opened, 1 byte validator flags, then header lines
 * separated by '\n' (each is given to the callback with "\r\n" added). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"
#include "text.h"

static const long codes[] = { 200, 206, 301, 304, 404, 408, 412, 416, 429,
                              500, 503, 100, 0, -1, 999 };

/* A little-endian number of n bytes. */
static uint64_t
take (const uint8_t *p, int n)
{
  uint64_t v = 0;

  for (int i = 0; i < n; i++)
    v |= (uint64_t) p[i] << (8 * i);
  return v;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct http_request_config rc = { 0 };
  struct http_headers hd = { 0 };
  uint64_t offset, total, a, b, t;
  size_t len;
  long code;
  char why[512], shown[4096], *line;
  const uint8_t *p, *end = data + size;

  if (size < 22)
    return 0;
  code = codes[data[0] % (sizeof codes / sizeof codes[0])];
  offset = take (data + 1, 8);
  len = (size_t) take (data + 9, 4);
  rc.size = take (data + 13, 8);
  if (data[21] & 1)
    rc.etag = "\"v1\"";
  if (data[21] & 2)
    rc.last_modified = "Tue, 01 Dec 2026 10:00:00 GMT";
  line = malloc (size + 3);
  if (line == NULL)
    return 0;
  for (p = data + 22; p < end;)
    {
      const uint8_t *nl = memchr (p, '\n', (size_t) (end - p));
      size_t n = (size_t) ((nl ? nl : end) - p);

      memcpy (line, p, n);
      memcpy (line + n, "\r\n", 2);
      http_headers_line (&hd, line, n + 2);
      text_escape (shown, sizeof shown, line, n + 2);
      text_escape (shown, 7, line, n + 2);
      p += n + 1;
    }
  free (line);
  http_parse_content_range (hd.content_range, &a, &b, &t);
  http_content_range_total (hd.content_range, &total);
  http_check_response (&rc, code, &hd, len, offset, len, why, sizeof why);
  http_check_response (&rc, code, &hd, len / 2, offset, len, why, 16);
  return 0;
}
