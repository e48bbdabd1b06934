/* diskshelf bt: blocking I/O over the non-blocking sockets of peer
 * connections (peer.c) and metadata fetches (magnet.c): connect within
 * a time, send all of a buffer, receive exactly n bytes.
 *
 * Time limits: every function takes an absolute deadline (monotonic
 * seconds, clock_seconds()); a wait for the socket is also cut at
 * `per_wait` seconds when that is positive (peer.c's 30 s limit on a
 * stuck send), so a call may give up before the deadline but never
 * after it.  Pass per_wait = 0 for "the deadline only".
 *
 * Errors: a negative errno with a recorded message ("timed out",
 * "connection closed by the peer", "connect: ...").  Thread model: the
 * functions touch only the fd and buffers they are given.
 */
#ifndef DISKSHELF_BT_SOCKIO_H
#define DISKSHELF_BT_SOCKIO_H

#include <stddef.h>
#include <sys/socket.h>

/* Wait until fd is ready for events (POLLIN, POLLOUT) within left
 * seconds; -ETIMEDOUT when it is not. */
int bt_wait_fd (int fd, short events, double left);

/* Send all of buf before the deadline (each wait at most per_wait). */
int bt_send_all (int fd, const void *buf, size_t len, double deadline,
                 double per_wait);

/* Receive exactly len bytes before the deadline (each wait at most
 * per_wait); -ECONNRESET when the peer closes first. */
int bt_recv_exact (int fd, void *buf, size_t len, double deadline,
                   double per_wait);

/* Connect the non-blocking socket fd to addr within timeout seconds
 * (poll for writability, then SO_ERROR). */
int bt_connect_within (int fd, const struct sockaddr *addr,
                       socklen_t addr_len, double timeout);

#endif
