/* diskshelf bt: blocking I/O with time limits over non-blocking peer
 * sockets (see sockio.h). */
#include "sockio.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>

#include "clock.h"
#include "error.h"

/* Seconds a wait may take: what is left before the deadline, cut at
 * per_wait when that is positive. */
static double
wait_limit (double deadline, double per_wait)
{
  double left = deadline - clock_seconds ();
  return per_wait > 0 && per_wait < left ? per_wait : left;
}

int
bt_wait_fd (int fd, short events, double left)
{
  struct pollfd pfd = { .fd = fd, .events = events };
  for (;;)
    {
      if (left <= 0)
        return error_set (ETIMEDOUT, "timed out");
      /* +1: a wait rounded down to 0 ms would return before the time. */
      int n = poll (&pfd, 1, (int) (left * 1000) + 1);
      if (n > 0)
        return 0;
      if (n == 0)
        return error_set (ETIMEDOUT, "timed out");
      if (errno != EINTR)
        return error_set (errno, "poll: %s", strerror (errno));
    }
}

int
bt_send_all (int fd, const void *buf, size_t len, double deadline,
             double per_wait)
{
  const uint8_t *p = buf;
  while (len > 0)
    {
      ssize_t n = send (fd, p, len, MSG_NOSIGNAL);
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        {
          int r = bt_wait_fd (fd, POLLOUT, wait_limit (deadline, per_wait));
          if (r < 0)
            return error_prefix (-r, "send");
          continue;
        }
      if (n < 0)
        return error_set (errno, "send: %s", strerror (errno));
      p += n;
      len -= n;
    }
  return 0;
}

int
bt_recv_exact (int fd, void *buf, size_t len, double deadline,
               double per_wait)
{
  uint8_t *p = buf;
  while (len > 0)
    {
      ssize_t n = recv (fd, p, len, 0);
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        {
          int r = bt_wait_fd (fd, POLLIN, wait_limit (deadline, per_wait));
          if (r < 0)
            return r;
          continue;
        }
      if (n < 0)
        return error_set (errno, "recv: %s", strerror (errno));
      if (n == 0)
        return error_set (ECONNRESET, "connection closed by the peer");
      p += n;
      len -= n;
    }
  return 0;
}

int
bt_connect_within (int fd, const struct sockaddr *addr, socklen_t addr_len,
                   double timeout)
{
  if (connect (fd, addr, addr_len) < 0 && errno != EINPROGRESS)
    return error_set (errno, "connect: %s", strerror (errno));
  int r = bt_wait_fd (fd, POLLOUT, timeout);
  if (r < 0)
    return error_prefix (-r, "connect");
  int err = 0;
  socklen_t elen = sizeof err;
  if (getsockopt (fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
    err = errno;
  if (err != 0)
    return error_set (err, "connect: %s", strerror (err));
  return 0;
}
