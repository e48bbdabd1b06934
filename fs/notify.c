/* diskshelf: the service manager notify protocol (see notify.h). */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "error.h"

static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;   /* 0: no service manager */

/* Read and unset $NOTIFY_SOCKET. */
bool
notify_init (void)
{
  const char *path = getenv ("NOTIFY_SOCKET");
  size_t len;

  notify_addr_len = 0;
  if (path == NULL || (path[0] != '/' && path[0] != '@'))
    {
      unsetenv ("NOTIFY_SOCKET");
      return false;
    }
  len = strlen (path);
  if (len >= sizeof notify_addr.sun_path)
    {
      log_warning ("NOTIFY_SOCKET is too long for a Unix socket; not"
                   " telling the service manager anything");
      unsetenv ("NOTIFY_SOCKET");
      return false;
    }
  memset (&notify_addr, 0, sizeof notify_addr);
  notify_addr.sun_family = AF_UNIX;
  memcpy (notify_addr.sun_path, path, len);
  if (path[0] == '@')
    notify_addr.sun_path[0] = '\0';   /* abstract namespace */
  notify_addr_len = (socklen_t) (offsetof (struct sockaddr_un, sun_path)
                                 + len + (path[0] == '/'));
  unsetenv ("NOTIFY_SOCKET");
  return true;
}

/* Format the message and send it as one datagram. */
void
notify_send (const char *fmt, ...)
{
  char message[1024];
  va_list ap;
  int fd, n;

  if (notify_addr_len == 0)
    return;
  va_start (ap, fmt);
  n = vsnprintf (message, sizeof message, fmt, ap);
  va_end (ap);
  if (n < 0)
    return;
  if ((size_t) n >= sizeof message)
    n = sizeof message - 1;
  fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    {
      log_debug ("notify: socket: %s", strerror (errno));
      return;
    }
  if (sendto (fd, message, (size_t) n, MSG_NOSIGNAL,
              (struct sockaddr *) &notify_addr, notify_addr_len) < 0)
    log_debug ("notify: %s", strerror (errno));
  close (fd);
}

/* Ready, with the entry counts as the human-readable status. */
void
notify_ready (size_t entries, size_t broken)
{
  /* MAINPID lets a unit that starts the daemon without -f (it forks)
   * follow the child, given NotifyAccess=all. */
  notify_send ("READY=1\nMAINPID=%d\nSTATUS=%zu entr%s, %zu broken",
               (int) getpid (), entries, entries == 1 ? "y" : "ies", broken);
}

/* About to reload: systemd >= 253 wants the monotonic time with it. */
void
notify_reloading (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  notify_send ("RELOADING=1\nSTATUS=reloading the catalog\n"
               "MONOTONIC_USEC=%llu",
               (unsigned long long) ts.tv_sec * 1000000ULL
               + (unsigned long long) ts.tv_nsec / 1000);
}

/* Shutting down. */
void
notify_stopping (void)
{
  notify_send ("STOPPING=1\nSTATUS=unmounting");
}

/* Ready, with the counts of the tree being served. */
void
daemon_notify_ready (struct daemon *d)
{
  size_t entries, broken;

  size_t ok, opening, failed;

  /* Entries whose open failed are broken too (left out, retried). */
  pthread_rwlock_rdlock (&d->tree_lock);
  fs_tree_count_states (d->tree, &ok, &opening, &failed);
  entries = ok + opening;
  broken = d->tree->broken_count + failed;
  pthread_rwlock_unlock (&d->tree_lock);
  notify_ready (entries, broken);
}
