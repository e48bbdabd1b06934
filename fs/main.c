/* diskshelf: main: subcommands, start-up, daemonizing, FUSE loop, exit.
 *
 * Start-up order matters: the catalog is read and the process forks
 * before any thread, socket or curl handle exists (the parent waits on a
 * pipe and exits only once the mount is usable, or with the child's
 * reason for failing); then the shared services start, the stacks open,
 * FUSE mounts, and the parent is told. */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blockcache.h"
#include "commands.h"
#include "catalog.h"
#include "check.h"
#include "config.h"
#include "daemon.h"
#include "diskcache.h"
#include "error.h"
#include "hooks.h"
#include "log-setup.h"
#include "mountinfo.h"
#include "notify.h"
#include "opener.h"
#include "options.h"
#include "prefetch.h"
#include "thread.h"

/* Fork; the parent waits for the child's word and exits with it.
 * Returns the write end of the pipe in the child. */
static int
daemonize (void)
{
  int fds[2];
  pid_t pid;

  if (pipe2 (fds, O_CLOEXEC) < 0)
    return error_set (errno, "pipe: %s", strerror (errno));
  pid = fork ();
  if (pid < 0)
    return error_set (errno, "fork: %s", strerror (errno));
  if (pid > 0)
    {
      char message[1024];
      ssize_t n;
      size_t got = 0;

      close (fds[1]);
      while (got < sizeof message - 1
             && (n = read (fds[0], message + got,
                           sizeof message - 1 - got)) != 0)
        {
          if (n < 0 && errno == EINTR)
            continue;
          if (n < 0)
            break;
          got += (size_t) n;
        }
      message[got] = '\0';
      if (got > 0 && message[0] == '+')
        _exit (0);
      fprintf (stderr, "diskshelf: %s\n",
               got > 1 ? message + 1 : "the daemon died while starting");
      _exit (1);
    }
  close (fds[0]);
  setsid ();
  return fds[1];
}

/* Tell the waiting parent how start-up went ("+" or "-reason"). */
static void
tell_parent (int fd, bool ok, const char *reason)
{
  char message[1024];
  int n;

  if (fd < 0)
    return;
  n = snprintf (message, sizeof message, "%c%s", ok ? '+' : '-',
                ok ? "" : reason);
  if (write (fd, message, (size_t) n) < 0)
    {
      /* The parent is gone; nothing to tell. */
    }
  close (fd);
}

/* Make the cache directory and the shared services. */
static void
start_services (struct daemon *d)
{
  struct daemon_options *o = &d->options;

  /* The memory bound leaves out the process's own overhead; the part
   * of it that grows with threads is glibc keeping freed 1 MiB FUSE
   * reply buffers and chunks in one malloc arena per thread (up to 8
   * per core).  Two arenas: ten HTTP xz entries read at once peaked
   * 7 MiB lower (174-176 against 180-185 MiB, 128M cache), with the
   * same CPU time for a single sequential reader.  A fixed
   * M_MMAP_THRESHOLD cut 20 MiB more but cost 17% CPU in page faults,
   * so it is not set. */
#ifndef __SANITIZE_ADDRESS__
  /* Not under ASan: its allocator serves the program, glibc's arenas
   * only glibc's own allocations, and with the limit set while threads
   * already ran, glibc aborted at a thread's exit about 1 run in 6
   * ("__malloc_arena_thread_freeres: a->attached_threads > 0"). */
  mallopt (M_ARENA_MAX, 2);
#endif
  if (block_cache_new (o->memory_cache_size, o->workers,
                       &d->services.block_cache) < 0)
    log_warning ("decoded-block cache: %s", error_message ());
  if (o->cache_dir == NULL)
    {
      log_info ("disk cache off (--cache-dir=none): remote bytes are"
                " fetched again after every restart");
      return;
    }
  if (disk_cache_new (o->cache_dir, o->cache_size,
                      &d->services.disk_cache) < 0)
    {
      log_warning ("disk cache %s unusable, reading uncached: %s",
                   o->cache_dir, error_message ());
      d->services.disk_cache = NULL;
    }
}

/* Build the FUSE argument vector from the options. */
static int
fuse_arguments (struct daemon *d, struct fuse_args *args)
{
  char *opts = NULL;
  int r;

  r = asprintf (&opts, "fsname=diskshelf:%s,subtype=diskshelf%s%s",
                d->options.catalog,
                d->options.fuse_options ? "," : "",
                d->options.fuse_options ? d->options.fuse_options : "");
  if (r < 0)
    return error_set (ENOMEM, "out of memory");
  if (fuse_opt_add_arg (args, "diskshelf") < 0
      || fuse_opt_add_arg (args, "-o") < 0
      || fuse_opt_add_arg (args, opts) < 0
      || (d->options.debug && fuse_opt_add_arg (args, "-d") < 0))
    {
      free (opts);
      return error_set (ENOMEM, "out of memory");
    }
  free (opts);
  return 0;
}

/* Let the kernel read ahead `kib` KiB at a time on our mount: FUSE's
 * default (128 KiB) turns every sequential read into 128 KiB requests,
 * and per-request cost then bounds throughput.  The bdi is found in
 * mountinfo, not by stat (which would ask our own, not yet running, loop).
 * Needs root; otherwise the kernel's default stays. */
static void
set_readahead (const char *mountpoint, uint64_t kib)
{
  char line[8192], bdi[64] = "", path[128];
  FILE *fp;

  if (kib == 0)
    return;
  if (geteuid () != 0)
    {
      log_info ("read-ahead stays at the kernel's default: raising it to"
                " %llu KiB needs root (--readahead=0 silences this)",
                (unsigned long long) kib);
      return;
    }
  fp = fopen ("/proc/self/mountinfo", "re");
  if (fp == NULL)
    return;
  while (fgets (line, sizeof line, fp))
    {
      char devno[64], target[4096];
      if (sscanf (line, "%*s %*s %63s %*s %4095s", devno, target) == 2
          && strcmp (target, mountpoint) == 0)
        snprintf (bdi, sizeof bdi, "%s", devno);
    }
  fclose (fp);
  if (bdi[0] == '\0')
    return;
  snprintf (path, sizeof path, "/sys/class/bdi/%s/read_ahead_kb", bdi);
  fp = fopen (path, "we");
  if (fp == NULL)
    {
      log_debug ("read-ahead stays at the kernel default: %s: %s", path,
                 strerror (errno));
      return;
    }
  fprintf (fp, "%llu\n", (unsigned long long) kib);
  if (fclose (fp) != 0)
    log_debug ("read-ahead stays at the kernel default: %s", strerror (errno));
}

/* What the announcing thread needs. */
struct announce
{
  struct daemon *d;
  int parent_fd;                /* -1 in the foreground */
  struct log_plan *log_plan;
  volatile sig_atomic_t loop_ended;  /* set before the unmount */
};

/* Thread body: once the kernel has finished FUSE's INIT (a stat of the
 * mountpoint answers only then, so the loop is serving), raise the
 * mount's read-ahead, let go of the caller's stdio, tell the waiting
 * parent and the service manager that the mount is ready.  Telling the
 * parent only now means `diskshelf CAT MNT && fusermount3 -u MNT` cannot
 * race this stat (a stat in flight makes the unmount fail with EBUSY).
 * Raising read-ahead earlier is undone by INIT, which caps it at its own
 * value.  If the stat fails the loop is ending, and the parent learns it
 * from the closed pipe. */
static void *
announce_mount (void *arg)
{
  struct announce *a = arg;
  struct daemon *d = a->d;
  struct stat st;

  /* After the unmount the stat sees the directory underneath: the
   * loop's end, not a mount to announce. */
  if (stat (d->options.mountpoint, &st) < 0 || a->loop_ended)
    return NULL;
  set_readahead (d->options.mountpoint, d->options.readahead / 1024);
  if (a->parent_fd >= 0)
    {
      log_plan_apply (a->log_plan, true);
      tell_parent (a->parent_fd, true, NULL);
    }
  daemon_notify_ready (d);
  return NULL;
}

/* Check the mountpoint before forking, for a clear message.  Root
 * opens /dev/fuse itself; other users mount through the set-uid
 * fusermount3, which libfuse runs for them. */
static int
check_mountpoint (const char *path)
{
  struct stat st;
  int r;

  if (stat (path, &st) < 0)
    return error_set (errno, "mountpoint %s: %s", path, strerror (errno));
  if (!S_ISDIR (st.st_mode))
    return error_set (ENOTDIR, "mountpoint %s: not a directory", path);
  r = mount_check_not_mounted (path);
  if (r < 0)
    return r;
  if (geteuid () == 0 && access ("/dev/fuse", R_OK | W_OK) < 0)
    return error_set (errno, "/dev/fuse: %s (is the fuse module loaded,"
                      " and fuse3 installed?)", strerror (errno));
  return 0;
}

/* Let FUSE parse the -o options once before anything is opened, so a
 * bad option fails at once instead of after every entry was opened. */
static int
check_fuse_options (struct daemon *d)
{
  struct fuse_args args = FUSE_ARGS_INIT (0, NULL);
  struct fuse_session *se;
  int r;

  r = fuse_arguments (d, &args);
  if (r < 0)
    return r;
  se = fuse_session_new (&args, fs_operations (),
                         sizeof (struct fuse_lowlevel_ops), NULL);
  fuse_opt_free_args (&args);
  if (se == NULL)
    return error_set (EINVAL, "-o %s: an option above is neither a"
                      " diskshelf nor a FUSE option; see --help and"
                      " mount.fuse3(8)",
                      d->options.fuse_options ? d->options.fuse_options
                      : "(none)");
  fuse_session_destroy (se);
  return 0;
}

/* Serve the mount until it is unmounted or signalled. */
static int
serve (struct daemon *d, int parent_fd, struct log_plan *log_plan)
{
  struct fuse_args args = FUSE_ARGS_INIT (0, NULL);
  struct fuse_loop_config *loop_config;
  struct fuse_session *se;
  struct catalog *c;
  sigset_t blocked, termination;
  struct announce announce = { 0 };
  pthread_t announcer;
  bool announcer_started = false;
  int status = 1, r;

  /* Block the daemon's signals before any thread exists, so that every
   * thread inherits the block: SIGHUP ("reload") stays blocked everywhere
   * and the watcher takes it from a signalfd; the termination signals are
   * unblocked in this thread alone, just before the FUSE loop.  libfuse's
   * handler only sets a flag that this thread's wait notices; a helper
   * thread taking SIGTERM would lose it.  (thread_create keeps later
   * threads blocking them too.) */
  thread_async_signals (&blocked);
  pthread_sigmask (SIG_BLOCK, &blocked, NULL);
  sigemptyset (&termination);
  sigaddset (&termination, SIGINT);
  sigaddset (&termination, SIGTERM);
  sigaddset (&termination, SIGQUIT);

  daemon_prepare_watch (d);
  if (catalog_read (d->options.catalog, &c) < 0)
    {
      tell_parent (parent_fd, false, error_message ());
      return 1;
    }
  if (c->errors)
    log_error ("catalog has broken entries, left out:\n%s", c->errors);
  start_services (d);
  if (fs_tree_build (c, NULL, &d->base, d->options.open_wait_ms,
                     &d->tree) < 0)
    {
      catalog_free (c);
      tell_parent (parent_fd, false, error_message ());
      return 1;
    }
  catalog_free (c);
  if (fuse_arguments (d, &args) < 0)
    {
      tell_parent (parent_fd, false, error_message ());
      return 1;
    }
  se = fuse_session_new (&args, fs_operations (),
                         sizeof (struct fuse_lowlevel_ops), d);
  if (se == NULL)
    {
      tell_parent (parent_fd, false, "cannot set up FUSE (bad -o option?)");
      goto out_args;
    }
  d->session = se;
  if (fuse_session_mount (se, d->options.mountpoint) != 0)
    {
      tell_parent (parent_fd, false, "cannot mount (see the message above)");
      goto out_destroy;
    }
  if (fuse_set_signal_handlers (se) != 0)
    {
      tell_parent (parent_fd, false, "cannot set signal handlers");
      goto out_unmount;
    }
  announce.d = d;
  announce.parent_fd = parent_fd;
  announce.log_plan = log_plan;
  if (thread_create ("ds-announce", &announcer, NULL, announce_mount,
                     &announce) == 0)
    announcer_started = true;
  else
    {
      tell_parent (parent_fd, false, "cannot start a thread");
      goto out_signals;
    }
  if (daemon_watch_catalog (d) < 0)
    log_warning ("catalog changes will need SIGHUP: %s", error_message ());
  log_info ("mounted %s on %s: %zu entries, %zu broken", d->options.catalog,
            d->options.mountpoint, d->tree->entry_count,
            d->tree->broken_count);
  fs_before_loop (se, !d->options.passthrough_off);
  pthread_sigmask (SIG_UNBLOCK, &termination, NULL);
  if (d->options.single_thread)
    r = fuse_session_loop (se);
  else
    {
      loop_config = fuse_loop_cfg_create ();
      fuse_loop_cfg_set_clone_fd (loop_config, 0);
      fuse_loop_cfg_set_max_threads (loop_config, 64);
      fuse_loop_cfg_set_idle_threads (loop_config, 16);
      r = fuse_session_loop_mt (se, loop_config);
      fuse_loop_cfg_destroy (loop_config);
    }
  /* ECONNABORTED is an unmount too.  When the connection goes, the
   * kernel gives ENODEV to a worker waiting on /dev/fuse, which libfuse
   * takes as the end; but a worker that had just taken a request off the
   * queue (a RELEASE sent as the last file closes after a lazy unmount,
   * say) gets ECONNABORTED instead (fs/fuse/dev.c, fuse_dev_do_read), and
   * libfuse calls that a failure.  The daemon never asks for
   * FUSE_ABORT_ERROR, so nothing else makes the kernel say it.  Without
   * this, about 1 lazy unmount in 16 with files open ended with exit
   * code 1. */
  if (r == -ECONNABORTED)
    {
      log_info ("the kernel ended the connection while a request was being"
                " read (an unmount): a clean exit");
      r = 0;
    }
  /* A positive result is the signal that ended the loop: a clean exit. */
  status = r < 0 ? 1 : 0;
  notify_stopping ();
  if (r < 0)
    log_error ("FUSE loop failed: %s", strerror (-r));
  pthread_sigmask (SIG_BLOCK, &termination, NULL);
  daemon_stop_watching ();
  prefetch_stop_all ();
 out_signals:
  fuse_remove_signal_handlers (se);
 out_unmount:
  announce.loop_ended = 1;
  fuse_session_unmount (se);
  /* Only now: the announcer may still wait in stat() for an answer that
   * the ended loop will never give; unmounting aborts that request.
   * Joining it before the unmount hung the daemon after an early
   * SIGINT. */
  if (announcer_started)
    pthread_join (announcer, NULL);
 out_destroy:
  /* Runs destroy if INIT was done; then nothing sends notifications and
   * the open files and inodes can go. */
  fuse_session_destroy (se);
  d->session = NULL;
  fs_after_loop ();
  fs_release_all ();
 out_args:
  fuse_opt_free_args (&args);
  log_info ("unmounted %s", d->options.mountpoint);
  return status;
}

int
main (int argc, char **argv)
{
  static struct daemon d;
  struct log_plan log_plan;
  int parent_fd = -1;
  int status, r;

  if (argc >= 2 && strcmp (argv[1], "check") == 0)
    return run_check (argc - 2, argv + 2);
  if (argc >= 2 && strcmp (argv[1], "status") == 0)
    return status_command (argc - 2, argv + 2);
  if (argc >= 2 && strcmp (argv[1], "prefetch") == 0)
    return prefetch_command (argc - 2, argv + 2);
  r = options_parse (argc - 1, argv + 1, &d.options);
  if (r == 1)
    return 0;
  if (r < 0)
    {
      fprintf (stderr, "diskshelf: %s\n", error_message ());
      return 2;
    }
  if (d.options.debug)
    log_set_level (LOG_LEVEL_DEBUG);
  if (check_mountpoint (d.options.mountpoint) < 0
      || check_fuse_options (&d) < 0)
    {
      fprintf (stderr, "diskshelf: %s\n", error_message ());
      options_free (&d.options);
      return 1;
    }
  if (log_plan_choose (&d.options, &log_plan) < 0)
    {
      fprintf (stderr, "diskshelf: %s\n", error_message ());
      options_free (&d.options);
      return 1;
    }
  if (log_plan.fallback)
    fprintf (stderr, "diskshelf: no syslog socket (/dev/log): logging to"
             " %s\n", log_plan.path);
  if (d.options.foreground)
    log_plan_apply (&log_plan, false);
  notify_init ();
  clock_gettime (CLOCK_REALTIME, &d.started);
  d.uid = getuid ();
  d.gid = getgid ();
  d.base.options = &d.options;
  d.base.services = &d.services;
  pthread_rwlock_init (&d.tree_lock, NULL);
  if (!d.options.foreground)
    {
      parent_fd = daemonize ();
      if (parent_fd < 0)
        {
          fprintf (stderr, "diskshelf: %s\n", error_message ());
          log_plan_free (&log_plan);
          options_free (&d.options);
          return 1;
        }
      /* A log file gets every line of the child, start-up included; the
       * parent still shows the reason if start-up fails. */
      if (log_plan.sink == LOG_SINK_FILE)
        log_plan_apply (&log_plan, false);
    }
  signal (SIGPIPE, SIG_IGN);
  status = serve (&d, parent_fd, &log_plan);
  log_plan_free (&log_plan);
  /* Opens in progress end (each within its timeout) before the services
   * they use go away. */
  opener_stop ();
  fs_tree_unref (d.tree);
  disk_cache_free (d.services.disk_cache);
  block_cache_free (d.services.block_cache);
  options_free (&d.options);
  return status;
}
