/* diskshelf bt: the listening socket and its accept thread (seeding and
 * incoming peers). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "internal.h"

#define MAX_INCOMING 64

/* The accept thread's body: poll twice a second for stopping. */
static void *
listen_main (void *opaque)
{
  struct bt_session *s = opaque;
  for (;;)
    {
      pthread_mutex_lock (&s->lock);
      bool stopping = s->stopping;
      pthread_mutex_unlock (&s->lock);
      if (stopping)
        break;
      struct pollfd pfd = { .fd = s->listen_fd, .events = POLLIN };
      if (poll (&pfd, 1, 500) <= 0)
        continue;
      int fd = accept4 (s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
      if (fd < 0)
        continue;
      pthread_mutex_lock (&s->lock);
      if (s->stopping || s->live_conns - s->outgoing_conns >= MAX_INCOMING
          || conn_start_locked (s, fd, -1) < 0)
        close (fd);
      pthread_mutex_unlock (&s->lock);
    }
  return NULL;
}

/* Bind a listening socket to addr:port; the fd or a negative errno. */
static int
bind_port (const char *addr, unsigned port_number)
{
  char port[8];
  snprintf (port, sizeof port, "%u", port_number);
  struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
                            .ai_flags = AI_PASSIVE | AI_NUMERICHOST }, *res;
  int g = getaddrinfo (addr, port, &hints, &res);
  if (g != 0)
    return error_set (EINVAL, "listen address %s: %s", addr,
                      gai_strerror (g));
  int fd = socket (res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0)
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind (fd, res->ai_addr, res->ai_addrlen) < 0
      || listen (fd, 64) < 0)
    {
      int e = errno;
      freeaddrinfo (res);
      if (fd >= 0)
        close (fd);
      return error_set (e, "cannot listen on %s port %s: %s", addr, port,
                        strerror (e));
    }
  freeaddrinfo (res);
  return fd;
}

/* Bind the listening socket (the first free port of listen_port .. +15,
 * then any free one) and start the accept thread. */
int
listen_start (struct bt_session *s)
{
  const char *addr = s->set.listen_address ? s->set.listen_address
                                           : "0.0.0.0";
  unsigned want = s->set.listen_port;
  int fd = -EADDRINUSE;
  for (unsigned k = 0; want != 0 && k < 16 && want + k <= 65535; k++)
    if ((fd = bind_port (addr, want + k)) >= 0 || fd != -EADDRINUSE)
      break;
  if (fd == -EADDRINUSE)
    fd = bind_port (addr, 0);
  if (fd < 0)
    return fd;
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  getsockname (fd, (struct sockaddr *) &ss, &len);
  s->port = ntohs (ss.ss_family == AF_INET6
                   ? ((struct sockaddr_in6 *) &ss)->sin6_port
                   : ((struct sockaddr_in *) &ss)->sin_port);
  s->listen_fd = fd;
  int r = thread_create ("ds-bt-listen", &s->listen_thread, NULL,
                         listen_main, s);
  if (r != 0)
    return error_set (r, "cannot start the listener thread: %s",
                      strerror (r));
  s->listen_started = true;
  return 0;
}

/* Join the accept thread and close the socket. */
void
listen_stop (struct bt_session *s)
{
  if (s->listen_started)
    pthread_join (s->listen_thread, NULL);
  s->listen_started = false;
  if (s->listen_fd >= 0)
    close (s->listen_fd);
  s->listen_fd = -1;
}
