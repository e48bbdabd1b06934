/* Unit tests for tracker reply parsing (bt/tracker_parse.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "../tests/unit/check.h"
#include "error.h"
#include "tracker.h"

/* Port and IPv4 address of peer i. */
static void
peer_at (const struct bt_reply *r, size_t i, char *ip, unsigned *port)
{
  const struct sockaddr_in *sin = (const void *) &r->peers[i].addr;
  inet_ntop (AF_INET, &sin->sin_addr, ip, 16);
  *port = ntohs (sin->sin_port);
}

static void
test_http (void)
{
  struct bt_reply r;
  char ip[16];
  unsigned port;
  /* compact (BEP 23): 127.0.0.1:6881 and 10.0.0.2:80 */
  static const uint8_t ok[] = "d8:intervali1800e12:min intervali900e5:peers"
    "12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50" "e";
  CHECK (bt_tracker_parse_http (ok, sizeof ok - 1, &r) == 0);
  CHECK (r.interval == 1800 && r.min_interval == 900 && r.peer_count == 2);
  peer_at (&r, 0, ip, &port);
  CHECK (strcmp (ip, "127.0.0.1") == 0 && port == 6881);
  peer_at (&r, 1, ip, &port);
  CHECK (strcmp (ip, "10.0.0.2") == 0 && port == 80);
  bt_reply_clear (&r);
  /* non-compact list of dicts, with a bad entry skipped */
  const char *dicts = "d8:intervali60e5:peersld2:ip9:127.0.0.14:porti7000eed"
                      "2:ip3:bad4:porti1eed2:ip3:::14:porti9eeee";
  CHECK (bt_tracker_parse_http ((const uint8_t *) dicts, strlen (dicts), &r)
         == 0);
  CHECK (r.peer_count == 2 && r.peers[1].addr.ss_family == AF_INET6);
  bt_reply_clear (&r);
  /* failure reason (opentracker's whitelist refusal) */
  const char *fail = "d14:failure reason63:Requested download is not "
                     "authorized for use with this tracker.e";
  CHECK (bt_tracker_parse_http ((const uint8_t *) fail, strlen (fail), &r)
         == -EREMOTEIO);
  CHECK (strstr (error_message (), "not authorized") != NULL);
  /* malformed */
  static const char *const bad[] = {
    "", "le", "d5:peers0:e", "d8:intervali-1e5:peers0:e",
    "d8:intervali60e5:peers5:12345e", "<html>", "d8:intervali60e",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK (bt_tracker_parse_http ((const uint8_t *) bad[i], strlen (bad[i]),
                                  &r) == -EPROTO);
  /* peers6 */
  uint8_t six[64];
  int n = snprintf ((char *) six, sizeof six, "d8:intervali5e6:peers618:");
  memset (six + n, 0, 15);
  six[n + 15] = 1;
  six[n + 16] = 0x1a;
  six[n + 17] = 0xe1;
  six[n + 18] = 'e';
  CHECK (bt_tracker_parse_http (six, n + 19, &r) == 0 && r.peer_count == 1);
  bt_reply_clear (&r);
}

static void
test_udp (void)
{
  struct bt_reply r;
  uint8_t buf[32] = { 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0x07, 0x08,
                      0, 0, 0, 0, 0, 0, 0, 1,
                      127, 0, 0, 1, 0x1a, 0xe1, 127, 0, 0, 2, 0, 0 };
  CHECK (bt_tracker_parse_udp (buf, 32, 0xdeadbeef, &r) == 0);
  /* the second peer has port 0 and is dropped */
  CHECK (r.interval == 0x0708 && r.peer_count == 1);
  bt_reply_clear (&r);
  CHECK (bt_tracker_parse_udp (buf, 32, 0xdeadbeee, &r) == -EPROTO);
  /* opentracker's 8-byte reply for a hash not on its whitelist */
  CHECK (bt_tracker_parse_udp (buf, 8, 0xdeadbeef, &r) == -EPROTO);
  CHECK (strstr (error_message (), "registered") != NULL);
  CHECK (bt_tracker_parse_udp (buf, 19, 0xdeadbeef, &r) == -EPROTO);
  uint8_t err[] = { 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef, 'n', 'o', 'p', 'e' };
  CHECK (bt_tracker_parse_udp (err, sizeof err, 0xdeadbeef, &r)
         == -EREMOTEIO);
  CHECK (strstr (error_message (), "nope") != NULL);
  buf[3] = 2;
  CHECK (bt_tracker_parse_udp (buf, 32, 0xdeadbeef, &r) == -EPROTO);
  /* a trailing partial peer is ignored */
  buf[3] = 1;
  CHECK (bt_tracker_parse_udp (buf, 29, 0xdeadbeef, &r) == 0
         && r.peer_count == 1);
  bt_reply_clear (&r);
}

int
main (void)
{
  test_http ();
  test_udp ();
  if (check_failures == 0)
    printf ("tracker: all checks passed\n");
  return check_failures != 0;
}
