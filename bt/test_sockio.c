/* Unit tests of bt/sockio.c over loopback sockets: whole sends and
 * exact receives, a peer that closes early, the deadline and the cut
 * per wait, and connects that succeed, are refused, or time out. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tests/unit/check.h"
#include "clock.h"
#include "error.h"
#include "sockio.h"

/* A connected pair of non-blocking stream sockets. */
static void
pair (int fd[2])
{
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0,
                  fd) < 0)
    {
      perror ("socketpair");
      exit (1);
    }
}

static void
test_send_and_receive (void)
{
  int fd[2];
  pair (fd);
  /* More than a socket buffer: bt_send_all must wait for the reader,
   * which here is the same thread, so send in a child. */
  size_t len = 4 << 20;
  uint8_t *out = malloc (len), *in = malloc (len);
  for (size_t i = 0; i < len; i++)
    out[i] = (uint8_t) (i * 13 + i / 4099);
  pid_t pid = fork ();
  if (pid == 0)
    {
      close (fd[1]);
      _exit (bt_send_all (fd[0], out, len, clock_seconds () + 30, 5) == 0
             ? 0 : 1);
    }
  close (fd[0]);
  CHECK (bt_recv_exact (fd[1], in, len, clock_seconds () + 30, 5) == 0);
  CHECK (memcmp (in, out, len) == 0);
  int status = -1;
  CHECK (waitpid (pid, &status, 0) == pid && WIFEXITED (status)
         && WEXITSTATUS (status) == 0);
  /* The sender is done and closed: the next receive sees the close. */
  uint8_t b;
  CHECK (bt_recv_exact (fd[1], &b, 1, clock_seconds () + 5, 0)
         == -ECONNRESET);
  CHECK (strstr (error_message (), "closed by the peer") != NULL);
  close (fd[1]);
  free (out);
  free (in);
}

static void
test_deadline_and_per_wait (void)
{
  int fd[2];
  pair (fd);
  uint8_t b[4];
  /* Nothing comes: the deadline ends the wait. */
  double t0 = clock_seconds ();
  CHECK (bt_recv_exact (fd[0], b, 4, t0 + 0.2, 0) == -ETIMEDOUT);
  CHECK (clock_seconds () - t0 < 5);
  /* A far deadline, but a 0.2 s cut per wait. */
  t0 = clock_seconds ();
  CHECK (bt_recv_exact (fd[0], b, 4, t0 + 600, 0.2) == -ETIMEDOUT);
  CHECK (clock_seconds () - t0 < 5);
  /* A deadline already past. */
  CHECK (bt_wait_fd (fd[0], POLLIN, -1) == -ETIMEDOUT);
  /* Part of the bytes, then nothing: still a timeout, not success. */
  CHECK (send (fd[1], "ab", 2, 0) == 2);
  CHECK (bt_recv_exact (fd[0], b, 4, clock_seconds () + 0.2, 0)
         == -ETIMEDOUT);
  close (fd[0]);
  close (fd[1]);
}

static void
test_connect (void)
{
  int lfd = socket (AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = { .sin_family = AF_INET,
                           .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
  socklen_t alen = sizeof a;
  CHECK (bind (lfd, (struct sockaddr *) &a, sizeof a) == 0);
  CHECK (listen (lfd, 4) == 0);
  CHECK (getsockname (lfd, (struct sockaddr *) &a, &alen) == 0);

  int fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  CHECK (bt_connect_within (fd, (struct sockaddr *) &a, sizeof a, 5) == 0);
  close (fd);

  /* Nobody listens there any more: refused, with the reason. */
  close (lfd);
  fd = socket (AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  CHECK (bt_connect_within (fd, (struct sockaddr *) &a, sizeof a, 5)
         == -ECONNREFUSED);
  CHECK (strstr (error_message (), "connect: ") == error_message ());
  close (fd);
}

int
main (void)
{
  test_send_and_receive ();
  test_deadline_and_per_wait ();
  test_connect ();
  if (check_failures == 0)
    printf ("sockio: all checks passed\n");
  return check_failures != 0;
}
