/* diskshelf: per-thread error messages and the log. */
#include "error.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define ERROR_MESSAGE_MAX 1024

static __thread char thread_message[ERROR_MESSAGE_MAX];
static int use_syslog;
static int use_timestamps;
static int use_level_prefix;
static enum log_level max_level = LOG_LEVEL_INFO;

/* Record a formatted message for this thread and hand back -errnum. */
int
error_set (int errnum, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (thread_message, sizeof thread_message, fmt, ap);
  va_end (ap);
  return errnum > 0 ? -errnum : (errnum == 0 ? -EIO : errnum);
}

/* Put "CONTEXT: " in front of this thread's message. */
int
error_prefix (int errnum, const char *fmt, ...)
{
  char prefix[ERROR_MESSAGE_MAX];
  char old[ERROR_MESSAGE_MAX];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (prefix, sizeof prefix, fmt, ap);
  va_end (ap);
  memcpy (old, thread_message, sizeof old);
  if (old[0] == '\0')
    snprintf (thread_message, sizeof thread_message, "%.500s: %.500s",
              prefix, strerror (errnum < 0 ? -errnum : errnum));
  else
    snprintf (thread_message, sizeof thread_message, "%.400s: %.600s",
              prefix, old);
  return errnum > 0 ? -errnum : errnum;
}

/* Read back this thread's last message. */
const char *
error_message (void)
{
  return thread_message;
}

/* Forget this thread's message. */
void
error_clear (void)
{
  thread_message[0] = '\0';
}

/* Choose syslog (daemon) or stderr (foreground) for log lines. */
void
log_use_syslog (int yes)
{
  use_syslog = yes;
  if (yes)
    openlog ("diskshelf", LOG_PID, LOG_DAEMON);
}

/* Stamp stderr lines with the date and time (log files). */
void
log_use_timestamps (int yes)
{
  use_timestamps = yes;
}

/* Prefix stderr lines with "<N>" for the journal. */
void
log_use_level_prefix (int yes)
{
  use_level_prefix = yes;
}

/* Set the most verbose level that is still written. */
void
log_set_level (enum log_level level)
{
  max_level = level;
}

/* Write one line to the chosen sink. */
void
log_msg (enum log_level level, const char *fmt, ...)
{
  static const char *const names[] = { "error", "warning", "info", "debug" };
  static const int priorities[] = { LOG_ERR, LOG_WARNING, LOG_INFO,
                                    LOG_DEBUG };
  char small[2048], *line = small, *big = NULL;
  int saved_errno = errno;
  va_list ap;
  int n;

  if (level > max_level)
    return;
  va_start (ap, fmt);
  n = vsnprintf (small, sizeof small, fmt, ap);
  va_end (ap);
  if (n >= (int) sizeof small)
    {
      /* Never cut a message short: a long one gets its own buffer. */
      va_start (ap, fmt);
      if (vasprintf (&big, fmt, ap) >= 0)
        line = big;
      else
        big = NULL;
      va_end (ap);
    }
  if (use_syslog)
    syslog (priorities[level], "%s", line);
  else if (use_timestamps)
    {
      char stamp[32] = "";
      struct tm tm;
      time_t now = time (NULL);

      if (localtime_r (&now, &tm))
        strftime (stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
      fprintf (stderr, "%s diskshelf[%d]: %s: %s\n", stamp, (int) getpid (),
               names[level], line);
    }
  else if (use_level_prefix)
    fprintf (stderr, "<%d>diskshelf: %s: %s\n", priorities[level],
             names[level], line);
  else
    fprintf (stderr, "diskshelf: %s: %s\n", names[level], line);
  free (big);
  errno = saved_errno;
}
