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
  struct http_headers hd;
};

/* Keep the headers that the checks need. */
static size_t
header_cb (char *buffer, size_t size, size_t nitems, void *arg)
{
  struct sink *s = arg;
  size_t n = size * nitems;

  http_headers_line (&s->hd, buffer, n);
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
  return http_check_response (rc, code, &s.hd, s.got, offset, len, why,
                              whylen);
}
