/* diskshelf nbd: unit tests for the NBD URI parser (run by meson test). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd.h"

static int failures;

#define CHECK(cond) \
  do { if (!(cond)) { fprintf (stderr, "%s:%d: %s: FAILED: %s\n", \
                               __FILE__, __LINE__, text, #cond); \
                      failures++; } } while (0)

/* Compare two possibly NULL strings. */
static int
same (const char *a, const char *b)
{
  if (a == NULL || b == NULL)
    return a == b;
  return strcmp (a, b) == 0;
}

/* Parse text expecting success and check the main fields. */
static void
good (const char *text, enum nbd_transport t, int tls, const char *user,
      const char *host, unsigned port, const char *export,
      const char *socket)
{
  struct nbd_uri *u = NULL;
  int r = nbd_uri_parse (text, &u);

  if (r != 0)
    {
      fprintf (stderr, "%s: unexpected error: %s\n", text, nbd_get_error ());
      failures++;
      return;
    }
  CHECK (u->transport == t);
  CHECK (u->tls == (tls != 0));
  CHECK (same (u->user, user));
  CHECK (same (u->host, host));
  CHECK (u->port == port);
  CHECK (same (u->export_name, export));
  CHECK (same (u->socket, socket));
  nbd_uri_free (u);
}

/* Parse text expecting -EINVAL and a message. */
static void
bad (const char *text)
{
  struct nbd_uri *u = NULL;
  int r = nbd_uri_parse (text, &u);

  CHECK (r == -EINVAL);
  CHECK (u == NULL);
  CHECK (nbd_get_error ()[0] != '\0');
  CHECK (nbd_get_errno () == EINVAL);
  nbd_uri_free (u);
}

int
main (void)
{
  const char *text;
  struct nbd_uri *u;

  good ("nbd://example.com/disk", NBD_TRANSPORT_TCP, 0, NULL, "example.com",
        10809, "disk", NULL);
  good ("nbd://example.com", NBD_TRANSPORT_TCP, 0, NULL, "example.com",
        10809, "", NULL);
  good ("nbd://example.com/", NBD_TRANSPORT_TCP, 0, NULL, "example.com",
        10809, "", NULL);
  good ("nbd://h//disk", NBD_TRANSPORT_TCP, 0, NULL, "h", 10809, "/disk",
        NULL);
  good ("nbd://h/hello%20world", NBD_TRANSPORT_TCP, 0, NULL, "h", 10809,
        "hello world", NULL);
  good ("nbd://127.0.0.1:12345/x", NBD_TRANSPORT_TCP, 0, NULL, "127.0.0.1",
        12345, "x", NULL);
  good ("nbd://[::1]:999/x", NBD_TRANSPORT_TCP, 0, NULL, "::1", 999, "x",
        NULL);
  good ("nbd://[::1]/x", NBD_TRANSPORT_TCP, 0, NULL, "::1", 10809, "x", NULL);
  good ("nbds://alice@h/e", NBD_TRANSPORT_TCP, 1, "alice", "h", 10809, "e",
        NULL);
  good ("nbd+unix:///e?socket=/tmp/s.sock", NBD_TRANSPORT_UNIX, 0, NULL,
        NULL, 10809, "e", "/tmp/s.sock");
  good ("nbd+unix://?socket=/tmp/a%20b", NBD_TRANSPORT_UNIX, 0, NULL, NULL,
        10809, "", "/tmp/a b");
  good ("nbds+unix://bob@/e?socket=/s&tls-psk-file=/k.psk",
        NBD_TRANSPORT_UNIX, 1, "bob", NULL, 10809, "e", "/s");
  good ("nbds+unix:///e?socket=/s;tls-certificates=/pki",
        NBD_TRANSPORT_UNIX, 1, NULL, NULL, 10809, "e", "/s");
  good ("nbd+vsock://3:2000/e", NBD_TRANSPORT_VSOCK, 0, NULL, "3", 2000,
        "e", NULL);
  good ("nbd://h/e?x-other=1", NBD_TRANSPORT_TCP, 0, NULL, "h", 10809, "e",
        NULL);

  text = "nbds://h/e?tls-certificates=/d&tls-verify-peer=0&tls-hostname=srv";
  CHECK (nbd_uri_parse (text, &u) == 0);
  if (u)
    {
      CHECK (same (u->tls_certificates, "/d"));
      CHECK (u->tls_verify_peer == 0);
      CHECK (same (u->tls_hostname, "srv"));
      nbd_uri_free (u);
    }
  text = "nbd+vsock:///e";
  CHECK (nbd_uri_parse (text, &u) == 0);
  if (u)
    {
      CHECK (u->cid == 2);
      nbd_uri_free (u);
    }
  text = "nbds://h/e";
  CHECK (nbd_uri_parse (text, &u) == 0);
  if (u)
    {
      CHECK (u->tls_verify_peer == -1);
      nbd_uri_free (u);
    }

  text = "scheme check";
  CHECK (nbd_uri_is_nbd ("nbds+unix:///x?socket=/s"));
  CHECK (!nbd_uri_is_nbd ("http://x"));
  CHECK (!nbd_uri_is_nbd ("nbd:foo"));

  bad ("http://h/e");
  bad ("nbd:foo");
  bad ("nbd+unix:///e");                         /* socket= missing */
  bad ("nbd+unix://host/e?socket=/s");           /* host with unix */
  bad ("nbd://h/e?socket=/s");                   /* socket= without unix */
  bad ("nbd://h:0/e");
  bad ("nbd://h:65536/e");
  bad ("nbd://h:12a/e");
  bad ("nbd://h:/e");
  bad ("nbd://[::1/e");
  bad ("nbd://[::1]x/e");
  bad ("nbd://h/e%2");
  bad ("nbd://h/e%zz");
  bad ("nbd://h/e%00x");
  bad ("nbd://h/e?unknown=1");
  bad ("nbd://h/e?socket");
  bad ("nbd://h/e#frag");
  bad ("nbd://h/e?tls-certificates=/d");         /* TLS key on nbd:// */
  bad ("nbds://h/e?tls-verify-peer=maybe");
  bad ("nbds://h/e?tls-verify-peer=1&tls-verify-peer=0");
  bad ("nbds://h/e?tls-certificates=/a&tls-certificates=/b");
  bad ("nbds://h/e?tls-certificates=/a&tls-psk-file=/b");
  bad ("nbd+vsock://host/e");
  bad ("nbd://@h/e");
  {
    char longname[5000 + 20];
    strcpy (longname, "nbd://h/");
    memset (longname + 8, 'a', 5000);
    longname[5008] = '\0';
    bad (longname);
  }

  if (failures)
    {
      fprintf (stderr, "%d failures\n", failures);
      return 1;
    }
  printf ("all URI tests passed\n");
  return 0;
}
