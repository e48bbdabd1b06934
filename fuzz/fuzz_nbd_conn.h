/* diskshelf fuzz: a client connection whose "server" is the fuzzer's
 * bytes, for the nbd/ harnesses (fuzz_nbd_*.c).
 *
 * The bytes are written into one end of a socketpair whose write side is
 * then shut, so the real receive path (nbd_conn_recv and the read
 * buffer) reads them and then meets the end of the stream; what the
 * client sends goes into the other end's receive buffer and is dropped.
 * Single-threaded: one harness call owns everything here. */
#ifndef DISKSHELF_FUZZ_NBD_CONN_H
#define DISKSHELF_FUZZ_NBD_CONN_H

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

struct fuzz_nbd
{
  struct nbd_client client;
  struct nbd_conn *conn;
  int peer;                  /* the server's end */
};

/* Set up a client for uri_text and a connection fed with data; 0 or -1. */
static int
fuzz_nbd_open (struct fuzz_nbd *f, const char *uri_text, const uint8_t *data,
               size_t size)
{
  int sv[2], buf = 1 << 20;
  size_t off = 0;

  memset (f, 0, sizeof *f);
  if (nbd_uri_parse (uri_text, &f->client.uri) < 0)
    return -1;
  f->client.name = (char *) "fuzz";
  f->client.timeout = 1;
  f->client.retry_time = 1;
  f->client.verify_peer = true;
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    goto err1;
  setsockopt (sv[1], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt (sv[0], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  setsockopt (sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  setsockopt (sv[1], SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  fcntl (sv[1], F_SETFL, O_NONBLOCK);
  while (off < size)
    {
      ssize_t r = write (sv[1], data + off, size - off);
      if (r <= 0)
        break;                /* the rest is cut off: still a test */
      off += (size_t) r;
    }
  shutdown (sv[1], SHUT_WR);
  if (nbd_conn_new (&f->client, 0, &f->conn) < 0)
    goto err2;
  f->conn->fd = sv[0];
  f->conn->io_timeout = 1;
  f->conn->info.min_block = 1;
  f->conn->info.pref_block = 4096;
  f->conn->info.max_payload = NBD_MAX_PAYLOAD;
  f->peer = sv[1];
  nbd_socket_set_timeout (sv[0], 1);
  return 0;

 err2:
  close (sv[0]);
  close (sv[1]);
 err1:
  nbd_uri_free (f->client.uri);
  return -1;
}

/* Free what fuzz_nbd_open made. */
static void
fuzz_nbd_close (struct fuzz_nbd *f)
{
  nbd_conn_free (f->conn);   /* closes the client's end */
  close (f->peer);
  nbd_uri_free (f->client.uri);
}

#endif
