/* diskshelf: `diskshelf prefetch [--background] FILE...`, the command.
 *
 * Asks the daemon behind each FILE to make the whole image local, through
 * the ioctls described in prefetch.h, then polls progress
 * until the job is done (exit 0) or failed (exit 1 with the reason).  On
 * a terminal it draws a progress bar with rate and ETA on stderr;
 * otherwise it prints a plain line every few seconds.  Ctrl-C leaves the
 * job (it stops unless another prefetch of the file still waits) and
 * exits 130.  --background only starts the jobs.
 *
 * Thread model: one thread; SIGINT/SIGTERM only set a flag.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "commands.h"
#include "prefetch.h"

#define POLL_SECONDS 0.2
#define PLAIN_LINE_SECONDS 5.0

static volatile sig_atomic_t interrupted;

/* Signal handler: remember that the user wants out. */
static void
on_interrupt (int sig)
{
  interrupted = sig;
}

static const char *const state_names[] = {
  [PREFETCH_IDLE] = "idle", [PREFETCH_RUNNING] = "running",
  [PREFETCH_DONE] = "done", [PREFETCH_FAILED] = "failed",
  [PREFETCH_STOPPED] = "stopped",
};

/* The name of a state the daemon answered. */
static const char *
state_name (const struct prefetch_progress *p)
{
  if (p->state < sizeof state_names / sizeof state_names[0])
    return state_names[p->state];
  return "unknown";
}

/* One prefetch ioctl on an open image; returns 0 or -errno. */
static int
ask (int fd, unsigned long cmd, struct prefetch_progress *p)
{
  memset (p, 0, sizeof *p);
  if (ioctl (fd, cmd, p) < 0)
    return -errno;
  p->reason[sizeof p->reason - 1] = '\0';
  return 0;
}

/* "12.3 MiB" */
static void
human (double bytes, char *buf, size_t size)
{
  static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
  unsigned u = 0;

  while (bytes >= 1024 && u < 4)
    {
      bytes /= 1024;
      u++;
    }
  snprintf (buf, size, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

/* Draw or print one progress report. */
static void
report (const char *file, const struct prefetch_progress *p, double rate,
        bool tty)
{
  char done[32], total[32], speed[32], eta[32] = "--:--";
  double fraction = p->total ? (double) p->done / (double) p->total : 1.0;

  human ((double) p->done, done, sizeof done);
  human ((double) p->total, total, sizeof total);
  human (rate, speed, sizeof speed);
  if (rate > 0 && p->total >= p->done)
    {
      double left = (double) (p->total - p->done) / rate;
      snprintf (eta, sizeof eta, "%d:%02d", (int) (left / 60),
                (int) left % 60);
    }
  if (tty)
    {
      char bar[31];
      int filled = (int) (fraction * 30);
      for (int i = 0; i < 30; i++)
        bar[i] = i < filled ? '#' : '.';
      bar[30] = '\0';
      fprintf (stderr, "\r%s [%s] %5.1f%% %s/s ETA %s  ", file, bar,
               fraction * 100, speed, eta);
    }
  else
    printf ("%s: %.1f%% (%s of %s), %s/s, ETA %s\n", file, fraction * 100,
            done, total, speed, eta);
  fflush (tty ? stderr : stdout);
}

/* Wait for one file's job; returns the exit code for it. */
static int
follow (const char *file, int fd)
{
  bool tty = isatty (2);
  double start = clock_seconds (), last_plain = start;
  double rate_time = start;
  uint64_t rate_bytes = 0;
  double rate = 0;
  struct prefetch_progress p;
  int r;

  for (;;)
    {
      r = ask (fd, PREFETCH_IOC_PROGRESS, &p);
      if (r < 0)
        {
          fprintf (stderr, "%sdiskshelf: %s: lost the daemon: %s\n",
                   tty ? "\n" : "", file, strerror (-r));
          return 1;
        }
      double now = clock_seconds ();
      if (now - rate_time >= 1.0 || rate_bytes == 0)
        {
          if (now > rate_time && p.done >= rate_bytes && rate_bytes)
            rate = (double) (p.done - rate_bytes) / (now - rate_time);
          else if (now > start)
            rate = (double) p.done / (now - start);
          rate_time = now;
          rate_bytes = p.done ? p.done : 1;
        }
      if (p.state != PREFETCH_RUNNING)
        break;
      if (interrupted)
        {
          ask (fd, PREFETCH_IOC_STOP, &p);
          fprintf (stderr, "%sdiskshelf: %s: prefetch interrupted at %.1f%%%s\n",
                   tty ? "\n" : "", file,
                   p.total ? 100.0 * (double) p.done / (double) p.total : 0,
                   p.waiters ? "; another prefetch of it goes on" : "");
          return 130;
        }
      if (tty)
        report (file, &p, rate, true);
      else if (now - last_plain >= PLAIN_LINE_SECONDS)
        {
          report (file, &p, rate, false);
          last_plain = now;
        }
      struct timespec ts = { 0, (long) (POLL_SECONDS * 1e9) };
      nanosleep (&ts, NULL);
    }
  if (tty)
    {
      if (p.state == PREFETCH_DONE)
        report (file, &p, rate, true);   /* the full bar */
      fputs ("\n", stderr);
    }
  if (p.state == PREFETCH_DONE)
    {
      char total[32];
      human ((double) p.total, total, sizeof total);
      printf ("%s: local (%s)\n", file, total);
      return 0;
    }
  fprintf (stderr, "diskshelf: %s: prefetch %s: %s\n", file,
           state_name (&p), p.reason[0] ? p.reason : "no reason given");
  return 1;
}

/* Entry point of `diskshelf prefetch`. */
int
prefetch_command (int argc, char **argv)
{
  bool background = false;
  int status = 0;
  struct sigaction sa;

  if (argc >= 1 && strcmp (argv[0], "--background") == 0)
    {
      background = true;
      argc--;
      argv++;
    }
  if (argc < 1 || argv[0][0] == '-')
    {
      fprintf (stderr, "usage: diskshelf prefetch [--background] FILE...\n");
      return 2;
    }
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt;
  sigaction (SIGINT, &sa, NULL);
  sigaction (SIGTERM, &sa, NULL);
  for (int i = 0; i < argc && !interrupted; i++)
    {
      struct prefetch_progress p;
      int fd = open (argv[i], O_RDONLY | O_CLOEXEC);
      int r;

      if (fd < 0)
        {
          fprintf (stderr, "diskshelf: %s: %s\n", argv[i], strerror (errno));
          status = 1;
          continue;
        }
      r = ask (fd, PREFETCH_IOC_START, &p);
      if (r == -ENOTTY || r == -EINVAL || r == -ENOSYS || r == -EOPNOTSUPP)
        {
          fprintf (stderr, "diskshelf: %s is not an image in a diskshelf"
                   " mount\n", argv[i]);
          status = 1;
        }
      else if (r < 0)
        {
          fprintf (stderr, "diskshelf: %s: %s\n", argv[i], strerror (-r));
          status = 1;
        }
      else if (background)
        {
          printf ("%s: prefetch %s\n", argv[i],
                  p.state == PREFETCH_RUNNING ? "started" : state_name (&p));
          if (p.state == PREFETCH_FAILED)
            {
              fprintf (stderr, "diskshelf: %s: prefetch failed: %s\n",
                       argv[i], p.reason);
              status = 1;
            }
        }
      else
        {
          r = follow (argv[i], fd);
          if (r != 0 && status != 130)
            status = r;
        }
      close (fd);
    }
  return status;
}
