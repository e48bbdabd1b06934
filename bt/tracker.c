/* diskshelf bt: announcing to HTTP(S) trackers (libcurl) and UDP
 * trackers (BEP 15). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "tracker.h"

static const char *const event_names[] = { "", "completed", "started",
                                           "stopped" };

struct body
{
  uint8_t *data;
  size_t len;
};

/* libcurl write callback: collect the body up to the size limit. */
static size_t
collect (char *ptr, size_t size, size_t nmemb, void *opaque)
{
  struct body *b = opaque;
  size_t n = size * nmemb;
  if (n > BT_MAX_TRACKER_REPLY - b->len)
    return 0;                   /* too big: curl fails the transfer */
  uint8_t *p = realloc (b->data, b->len + n + 1);
  if (p == NULL)
    return 0;
  memcpy (p + b->len, ptr, n);
  b->data = p;
  b->len += n;
  return n;
}

/* libcurl progress callback: abort when the session is closing. */
static int
check_cancel (void *opaque, curl_off_t dltotal, curl_off_t dlnow,
              curl_off_t ultotal, curl_off_t ulnow)
{
  const atomic_bool *cancel = opaque;
  return cancel != NULL && atomic_load (cancel);
}

/* Percent-encode 20 bytes into out (61 bytes). */
static void
url_escape20 (const uint8_t *in, char *out)
{
  static const char hex[] = "0123456789ABCDEF";
  for (int i = 0; i < 20; i++)
    {
      *out++ = '%';
      *out++ = hex[in[i] >> 4];
      *out++ = hex[in[i] & 15];
    }
  *out = '\0';
}

/* Announce over HTTP(S). */
static int
announce_http (const char *url, const struct bt_announce *a,
               struct bt_reply *out)
{
  char hash[61], id[61];
  url_escape20 (a->info_hash, hash);
  url_escape20 (a->peer_id, id);
  char *full;
  if (asprintf (&full, "%s%cinfo_hash=%s&peer_id=%s&port=%u&uploaded=%llu"
                "&downloaded=%llu&left=%llu&compact=1&numwant=%d&key=%08x%s%s",
                url, strchr (url, '?') ? '&' : '?', hash, id, a->port,
                (unsigned long long) a->uploaded,
                (unsigned long long) a->downloaded,
                (unsigned long long) a->left, a->numwant, a->key,
                a->event != BT_EVENT_NONE ? "&event=" : "",
                event_names[a->event]) < 0)
    return error_set (ENOMEM, "out of memory");
  CURL *curl = curl_easy_init ();
  if (curl == NULL)
    {
      free (full);
      return error_set (ENOMEM, "curl_easy_init failed");
    }
  struct body body = { 0 };
  char errbuf[CURL_ERROR_SIZE] = "";
  long ms = a->timeout > 0 ? (long) (a->timeout * 1000) : 15000;
  curl_easy_setopt (curl, CURLOPT_URL, full);
  curl_easy_setopt (curl, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt (curl, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt (curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt (curl, CURLOPT_TIMEOUT_MS, ms);
  curl_easy_setopt (curl, CURLOPT_CONNECTTIMEOUT_MS, ms);
  curl_easy_setopt (curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt (curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt (curl, CURLOPT_MAXREDIRS, 3L);
  curl_easy_setopt (curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt (curl, CURLOPT_USERAGENT, "diskshelf/0.1");
  curl_easy_setopt (curl, CURLOPT_XFERINFOFUNCTION, check_cancel);
  curl_easy_setopt (curl, CURLOPT_XFERINFODATA, (void *) a->cancel);
  curl_easy_setopt (curl, CURLOPT_NOPROGRESS, 0L);
  if (a->ca_file != NULL)
    curl_easy_setopt (curl, CURLOPT_CAINFO, a->ca_file);
  CURLcode rc = curl_easy_perform (curl);
  long status = 0;
  curl_easy_getinfo (curl, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_cleanup (curl);
  free (full);
  int r;
  if (rc == CURLE_ABORTED_BY_CALLBACK)
    r = error_set (ECANCELED, "cancelled");
  else if (rc != CURLE_OK)
    r = error_set (EHOSTUNREACH, "%s", errbuf[0] ? errbuf
                   : curl_easy_strerror (rc));
  else if (status != 200)
    r = error_set (EREMOTEIO, "HTTP status %ld", status);
  else
    r = bt_tracker_parse_http (body.data, body.len, out);
  free (body.data);
  return r;
}

/* Write a big-endian 32-bit number. */
static void
put32 (uint8_t *p, uint32_t v)
{
  p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Write a big-endian 64-bit number. */
static void
put64 (uint8_t *p, uint64_t v)
{
  put32 (p, v >> 32);
  put32 (p + 4, (uint32_t) v);
}

/* Read a big-endian 32-bit number. */
static uint32_t
get32 (const uint8_t *p)
{
  return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8
         | p[3];
}

/* Split udp://host:port[/path] into host and port. */
static int
split_udp_url (const char *url, char *host, size_t hostlen, char *port,
               size_t portlen)
{
  const char *p = url + strlen ("udp://");
  const char *end = p + strcspn (p, "/?");
  const char *colon;
  if (*p == '[')
    {
      const char *close = memchr (p, ']', end - p);
      if (close == NULL || close[1] != ':')
        return error_set (EINVAL, "bad UDP tracker URL");
      colon = close + 1;
      p++;
      if ((size_t) (close - p) >= hostlen)
        return error_set (EINVAL, "bad UDP tracker URL");
      memcpy (host, p, close - p);
      host[close - p] = '\0';
    }
  else
    {
      colon = memrchr (p, ':', end - p);
      if (colon == NULL || (size_t) (colon - p) >= hostlen || colon == p)
        return error_set (EINVAL, "UDP tracker URL without host:port");
      memcpy (host, p, colon - p);
      host[colon - p] = '\0';
    }
  size_t plen = end - colon - 1;
  if (plen == 0 || plen >= portlen)
    return error_set (EINVAL, "UDP tracker URL without a port");
  memcpy (port, colon + 1, plen);
  port[plen] = '\0';
  return 0;
}

/* Send req and wait for a reply of the same transaction, retrying until
 * the deadline.  Returns the reply length or a negative errno. */
static ssize_t
udp_exchange (int fd, const uint8_t *req, size_t reqlen, uint8_t *reply,
              size_t replylen, double deadline, const atomic_bool *cancel)
{
  double wait = 1.0;            /* BEP 15 says 15 s * 2^n; loopback-first */
  for (;;)
    {
      if (send (fd, req, reqlen, 0) < 0)
        return error_set (errno, "send: %s", strerror (errno));
      double until = clock_seconds () + wait;
      if (until > deadline)
        until = deadline;
      for (;;)
        {
          double left = until - clock_seconds ();
          if (left <= 0)
            break;
          if (cancel != NULL && atomic_load (cancel))
            return error_set (ECANCELED, "cancelled");
          if (left > 0.2)
            left = 0.2;         /* look at cancel five times a second */
          struct pollfd pfd = { .fd = fd, .events = POLLIN };
          int n = poll (&pfd, 1, (int) (left * 1000) + 1);
          if (n < 0 && errno != EINTR)
            return error_set (errno, "poll: %s", strerror (errno));
          if (n <= 0)
            continue;
          ssize_t got = recv (fd, reply, replylen, 0);
          if (got < 0)
            {
              if (errno == EINTR || errno == EAGAIN)
                continue;
              return error_set (errno, "recv: %s", strerror (errno));
            }
          if (got >= 8 && memcmp (reply + 4, req + 12, 4) == 0)
            return got;
        }
      if (clock_seconds () >= deadline)
        return error_set (ETIMEDOUT, "no reply");
      wait *= 2;
    }
}

/* Announce over UDP (BEP 15: connect, then announce). */
static int
announce_udp (const char *url, const struct bt_announce *a,
              struct bt_reply *out)
{
  char host[256], port[16];
  int r = split_udp_url (url, host, sizeof host, port, sizeof port);
  if (r < 0)
    return r;
  struct addrinfo hints = { .ai_socktype = SOCK_DGRAM }, *res;
  int g = getaddrinfo (host, port, &hints, &res);
  if (g != 0)
    return error_set (EHOSTUNREACH, "resolving %s: %s", host,
                      gai_strerror (g));
  int fd = socket (res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect (fd, res->ai_addr, res->ai_addrlen) < 0)
    {
      int e = errno;
      freeaddrinfo (res);
      if (fd >= 0)
        close (fd);
      return error_set (e, "connect: %s", strerror (e));
    }
  freeaddrinfo (res);
  double deadline = clock_seconds () + (a->timeout > 0 ? a->timeout : 15);
  uint8_t req[98], reply[20 + 6 * 400];
  uint32_t txid;
  if (getrandom (&txid, sizeof txid, 0) != sizeof txid)
    txid = (uint32_t) (clock_seconds () * 1e6);
  put64 (req, UINT64_C (0x41727101980));
  put32 (req + 8, 0);           /* connect */
  put32 (req + 12, txid);
  ssize_t n = udp_exchange (fd, req, 16, reply, sizeof reply, deadline,
                           a->cancel);
  if (n >= 0 && (n < 16 || get32 (reply) != 0))
    n = get32 (reply) == 3 && n > 8
        ? error_set (EREMOTEIO, "tracker refused: %.*s", (int) (n - 8),
                     (const char *) reply + 8)
        : error_set (EPROTO, "bad UDP connect reply");
  if (n < 0)
    {
      close (fd);
      return error_prefix (-n, "UDP connect");
    }
  memcpy (req, reply + 8, 8);   /* connection id */
  txid++;
  put32 (req + 8, 1);           /* announce */
  put32 (req + 12, txid);
  memcpy (req + 16, a->info_hash, 20);
  memcpy (req + 36, a->peer_id, 20);
  put64 (req + 56, a->downloaded);
  put64 (req + 64, a->left);
  put64 (req + 72, a->uploaded);
  static const uint32_t udp_event[] = { 0, 1, 2, 3 };
  put32 (req + 80, udp_event[a->event]);
  put32 (req + 84, 0);          /* IP: the sender's */
  put32 (req + 88, a->key);
  put32 (req + 92, (uint32_t) a->numwant);
  req[96] = a->port >> 8;
  req[97] = a->port;
  n = udp_exchange (fd, req, sizeof req, reply, sizeof reply, deadline,
                    a->cancel);
  close (fd);
  if (n < 0)
    return error_prefix (-n, "UDP announce");
  return bt_tracker_parse_udp (reply, n, txid, out);
}

/* Announce to one tracker URL. */
int
bt_tracker_announce (const char *url, const struct bt_announce *a,
                     struct bt_reply *out)
{
  memset (out, 0, sizeof *out);
  int r;
  if (strncmp (url, "http://", 7) == 0 || strncmp (url, "https://", 8) == 0)
    r = announce_http (url, a, out);
  else if (strncmp (url, "udp://", 6) == 0)
    r = announce_udp (url, a, out);
  else
    r = error_set (EPROTONOSUPPORT, "unsupported tracker scheme");
  if (r < 0)
    return error_prefix (-r, "tracker %s", url);
  return 0;
}
