/* diskshelf: re-reading the catalog on change (inotify) and on SIGHUP.
 *
 * One watcher thread polls an inotify fd (every catalog directory is
 * watched), a signalfd for SIGHUP and a stop pipe.  Changes are batched:
 * after the first event it waits until the catalog has been quiet for a
 * moment, then rebuilds the tree.  Entries whose .conf text is unchanged
 * keep their open stacks; open files keep their old entries until
 * closed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "daemon.h"
#include "error.h"
#include "retire.h"
#include "thread.h"
#include "notify.h"

#define QUIET_MS 200
#define WATCH_MASK (IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE \
                    | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF)

static pthread_t watcher;
static bool watching;
static int stop_pipe[2] = { -1, -1 };
static int inotify_fd = -1;     /* watches made before the first read */
static int sighup_fd = -1;

/* Rebuild the tree from the catalog and swap it in. */
int
daemon_reload (struct daemon *d)
{
  struct fs_tree *old, *fresh;
  struct catalog *c;
  struct timespec t0, t1;
  int r;

  clock_gettime (CLOCK_MONOTONIC, &t0);
  r = catalog_read (d->options.catalog, &c);
  if (r < 0)
    {
      log_error ("reload: %s; keeping the current entries", error_message ());
      return r;
    }
  if (c->errors)
    log_error ("catalog has broken entries, left out:\n%s", c->errors);
  pthread_rwlock_rdlock (&d->tree_lock);
  old = d->tree;
  fs_tree_ref (old);
  pthread_rwlock_unlock (&d->tree_lock);
  r = fs_tree_build (c, old, &d->base, d->options.open_wait_ms, &fresh);
  catalog_free (c);
  fs_tree_unref (old);
  if (r < 0)
    {
      log_error ("reload: %s", error_message ());
      return r;
    }
  /* Names whose entry changed are dropped from the kernel's cache once
   * the new tree is in, so their next lookup meets the new inode (see
   * retire.h). */
  pthread_rwlock_wrlock (&d->tree_lock);
  old = d->tree;
  retire_prepare (old, fresh);
  d->tree = fresh;
  pthread_rwlock_unlock (&d->tree_lock);
  retire_run (d);
  fs_tree_unref (old);
  clock_gettime (CLOCK_MONOTONIC, &t1);
  log_info ("catalog reloaded: %zu entries, %zu broken, in %.1f ms",
            fresh->entry_count, fresh->broken_count,
            (double) (t1.tv_sec - t0.tv_sec) * 1e3
            + (double) (t1.tv_nsec - t0.tv_nsec) / 1e6);
  return 0;
}

/* Watch dir and every directory below it. */
static void
watch_tree (int ifd, const char *dir, int depth)
{
  DIR *d;
  struct dirent *de;

  if (depth > 32 || inotify_add_watch (ifd, dir, WATCH_MASK) < 0)
    return;
  d = opendir (dir);
  if (d == NULL)
    return;
  while ((de = readdir (d)) != NULL)
    {
      char *path;
      struct stat st;

      if (de->d_name[0] == '.')
        continue;
      if (asprintf (&path, "%s/%s", dir, de->d_name) < 0)
        continue;
      if (lstat (path, &st) == 0 && S_ISDIR (st.st_mode))
        watch_tree (ifd, path, depth + 1);
      free (path);
    }
  closedir (d);
}

/* Drain whatever is readable on fd. */
static void
drain (int fd)
{
  char buf[4096];

  while (read (fd, buf, sizeof buf) > 0)
    ;
}

/* The watcher thread. */
static void *
watch_loop (void *arg)
{
  struct daemon *d = arg;
  int ifd = inotify_fd, sfd = sighup_fd;

  for (;;)
    {
      struct pollfd fds[3] = {
        { stop_pipe[0], POLLIN, 0 }, { ifd, POLLIN, 0 }, { sfd, POLLIN, 0 },
      };
      bool changed = false;

      if (poll (fds, 3, -1) < 0)
        {
          if (errno == EINTR)
            continue;
          break;
        }
      if (fds[0].revents)
        break;
      if (fds[2].revents)
        {
          drain (sfd);
          log_info ("SIGHUP: reloading the catalog");
          changed = true;
        }
      if (fds[1].revents)
        {
          /* Wait until the catalog has been quiet for a moment. */
          do
            drain (ifd);
          while (poll (&fds[1], 1, QUIET_MS) > 0);
          changed = true;
        }
      if (changed)
        {
          notify_reloading ();
          daemon_reload (d);
          daemon_notify_ready (d);
          if (ifd >= 0)
            {
              /* New directories need watches; re-adding is harmless. */
              watch_tree (ifd, d->options.catalog, 0);
            }
        }
    }
  return NULL;
}

/* Watch the catalog and SIGHUP from now on.  Called before the catalog
 * is first read, so that no change made while the daemon starts is
 * missed: anything that happens after this is queued for the watcher. */
void
daemon_prepare_watch (struct daemon *d)
{
  sigset_t hup;

  sigemptyset (&hup);
  sigaddset (&hup, SIGHUP);
  sighup_fd = signalfd (-1, &hup, SFD_NONBLOCK | SFD_CLOEXEC);
  inotify_fd = inotify_init1 (IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd >= 0)
    watch_tree (inotify_fd, d->options.catalog, 0);
  else
    log_warning ("catalog changes will need SIGHUP: inotify: %s",
                 strerror (errno));
}

/* Start the watcher thread. */
int
daemon_watch_catalog (struct daemon *d)
{
  if (pipe2 (stop_pipe, O_CLOEXEC) < 0)
    return error_set (errno, "pipe: %s", strerror (errno));
  if (thread_create ("ds-reload", &watcher, NULL, watch_loop, d) != 0)
    return error_set (EAGAIN, "cannot start the catalog watcher");
  watching = true;
  return 0;
}

/* Stop and join the watcher thread. */
void
daemon_stop_watching (void)
{
  if (!watching)
    return;
  if (write (stop_pipe[1], "x", 1) < 0)
    {
      /* The thread will still see the pipe close below. */
    }
  pthread_join (watcher, NULL);
  close (stop_pipe[0]);
  close (stop_pipe[1]);
  watching = false;
  if (inotify_fd >= 0)
    close (inotify_fd);
  if (sighup_fd >= 0)
    close (sighup_fd);
  inotify_fd = sighup_fd = -1;
}
