/* diskshelf: watching the mount table for our mount's disappearance. */
#include "mount_watch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "error.h"
#include "layer.h"
#include "mountinfo.h"
#include "thread.h"

#define FIND_MOUNT_TRIES 100        /* x 100 ms */
#define POLL_MS 1000                /* also re-read now and then */

static pthread_t watcher;
static bool running;
static int stop_pipe[2] = { -1, -1 };
static const char *watched;

/* Does mountinfo (open at fd) list a mount of device dev? */
static bool
device_mounted (int fd, dev_t dev)
{
  char want[64];
  char *text = NULL;
  size_t len = 0;
  FILE *mem = open_memstream (&text, &len);
  bool found = false;

  if (mem == NULL)
    return true;   /* cannot tell: assume still there */
  if (lseek (fd, 0, SEEK_SET) == 0)
    {
      char buf[8192];
      ssize_t n;
      while ((n = read (fd, buf, sizeof buf)) > 0)
        fwrite (buf, 1, (size_t) n, mem);
    }
  fclose (mem);
  snprintf (want, sizeof want, " %u:%u ", major (dev), minor (dev));
  for (char *line = text; line && *line;)
    {
      /* Field 3 is major:minor: "ID PARENT MAJ:MIN ROOT MOUNTPOINT ..." */
      char *sp = strchr (line, ' ');
      sp = sp ? strchr (sp + 1, ' ') : NULL;
      if (sp && strncmp (sp, want, strlen (want)) == 0)
        {
          found = true;
          break;
        }
      line = strchr (line, '\n');
      if (line)
        line++;
    }
  free (text);
  return found || len == 0;
}

/* The device of our mount, once the kernel shows it; 0 when told to
 * stop first.  No give-up time: on a loaded machine the mount may take
 * long to show, and a watcher that gave up silently left a lazy unmount
 * unnoticed (blocked reads then waited for the entry's timeout). */
static dev_t
find_our_device (void)
{
  for (int i = 0;; i++)
    {
      struct pollfd p = { stop_pipe[0], POLLIN, 0 };
      dev_t dev;

      /* From the mount table, not a stat of the mountpoint: a stat in
       * flight when `diskshelf CAT MNT && fusermount3 -u MNT` unmounts
       * made the unmount fail with EBUSY. */
      if (mountinfo_device (watched, "fuse.diskshelf", &dev))
        return dev;
      if (i == FIND_MOUNT_TRIES)
        log_warning ("the mount %s is not visible after %d s; still waiting"
                     " to watch it for a lazy unmount", watched,
                     FIND_MOUNT_TRIES / 10);
      if (poll (&p, 1, 100) > 0)
        return 0;
    }
}

/* Thread body: wait until our device leaves the mount table. */
static void *
watch_loop (void *arg)
{
  dev_t dev = find_our_device ();
  int fd;

  if (dev == 0)
    return NULL;
  fd = open ("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    {
      log_warning ("cannot watch the mount table (a lazy unmount will wait "
                   "for blocked reads): /proc/self/mountinfo: %s",
                   strerror (errno));
      return NULL;
    }
  for (;;)
    {
      struct pollfd fds[2] = {
        { stop_pipe[0], POLLIN, 0 }, { fd, POLLPRI, 0 },
      };

      if (!device_mounted (fd, dev))
        {
          log_info ("%s is no longer mounted: reads still waiting for a "
                    "server fail now", watched);
          layer_abort_waits ();
          break;
        }
      if (poll (fds, 2, POLL_MS) < 0 && errno != EINTR)
        break;
      if (fds[0].revents)
        break;
    }
  close (fd);
  return NULL;
}

/* Start watching. */
int
mount_watch_start (const char *mountpoint)
{
  if (running)
    return 0;
  watched = mountpoint;
  if (pipe2 (stop_pipe, O_CLOEXEC) < 0)
    return error_set (errno, "mount watcher: pipe: %s", strerror (errno));
  if (thread_create ("ds-mount-watch", &watcher, NULL, watch_loop, NULL) != 0)
    {
      close (stop_pipe[0]);
      close (stop_pipe[1]);
      return error_set (EAGAIN, "mount watcher: cannot start a thread");
    }
  running = true;
  return 0;
}

/* Stop and join the watcher. */
void
mount_watch_stop (void)
{
  if (!running)
    return;
  if (write (stop_pipe[1], "x", 1) < 0)
    {
      /* Closing the pipe below ends the poll too. */
    }
  pthread_join (watcher, NULL);
  close (stop_pipe[0]);
  close (stop_pipe[1]);
  stop_pipe[0] = stop_pipe[1] = -1;
  running = false;
}
