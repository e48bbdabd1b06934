/* diskshelf: where the daemon's log lines go (see log-setup.h). */
#include "log-setup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

#define SYSLOG_SOCKET "/dev/log"

/* True when $JOURNAL_STREAM ("DEV:INODE") is the file on fd 2, i.e.
 * systemd connected our stderr to the journal. */
static bool
stderr_is_journal (void)
{
  const char *js = getenv ("JOURNAL_STREAM");
  unsigned long long dev, ino;
  struct stat st;

  if (js == NULL || sscanf (js, "%llu:%llu", &dev, &ino) != 2)
    return false;
  if (fstat (2, &st) < 0)
    return false;
  return (unsigned long long) st.st_dev == dev
         && (unsigned long long) st.st_ino == ino;
}

/* True when something listens for syslog datagrams. */
static bool
have_syslog (void)
{
  struct stat st;

  return stat (SYSLOG_SOCKET, &st) == 0 && S_ISSOCK (st.st_mode);
}

/* Make every missing parent directory of path (mode 0755). */
static void
make_parents (char *path)
{
  for (char *p = strchr (path + 1, '/'); p; p = strchr (p + 1, '/'))
    {
      *p = '\0';
      mkdir (path, 0755);
      *p = '/';
    }
}

/* The fallback log file when there is no syslog. */
static char *
default_log_file (void)
{
  const char *state = getenv ("XDG_STATE_HOME");
  const char *home = getenv ("HOME");
  char *path = NULL;

  if (geteuid () == 0)
    return strdup ("/var/log/diskshelf.log");
  if (state && state[0] == '/')
    {
      if (asprintf (&path, "%s/diskshelf/diskshelf.log", state) < 0)
        return NULL;
      return path;
    }
  if (home == NULL || home[0] != '/')
    home = "/tmp";
  if (asprintf (&path, "%s/.local/state/diskshelf/diskshelf.log", home) < 0)
    return NULL;
  return path;
}

/* Open (creating) a log file for appending. */
static int
open_log_file (struct log_plan *plan)
{
  make_parents (plan->path);
  plan->fd = open (plan->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
                   0640);
  if (plan->fd < 0)
    return error_set (errno, "log file %s: %s (give another with"
                      " --log-file=PATH)", plan->path, strerror (errno));
  return 0;
}

/* Decide the sink. */
int
log_plan_choose (const struct daemon_options *o, struct log_plan *plan)
{
  memset (plan, 0, sizeof *plan);
  plan->fd = -1;
  if (o->log_file)
    {
      plan->sink = LOG_SINK_FILE;
      plan->path = strdup (o->log_file);
      if (plan->path == NULL)
        return error_set (ENOMEM, "out of memory");
      return open_log_file (plan);
    }
  if (stderr_is_journal ())
    {
      /* Let the journal record each line's level. */
      log_use_level_prefix (1);
      plan->sink = LOG_SINK_STDERR;
      return 0;
    }
  if (o->foreground)
    {
      plan->sink = LOG_SINK_STDERR;
      return 0;
    }
  if (have_syslog ())
    {
      plan->sink = LOG_SINK_SYSLOG;
      return 0;
    }
  plan->sink = LOG_SINK_FILE;
  plan->fallback = true;
  plan->path = default_log_file ();
  if (plan->path == NULL)
    return error_set (ENOMEM, "out of memory");
  return open_log_file (plan);
}

/* Point fd at /dev/null. */
static void
to_dev_null (int fd)
{
  int null = open ("/dev/null", O_RDWR | O_CLOEXEC);

  if (null < 0)
    return;
  dup2 (null, fd);
  close (null);
}

/* Switch to the planned sink. */
void
log_plan_apply (struct log_plan *plan, bool daemonized)
{
  if (daemonized)
    {
      to_dev_null (0);
      to_dev_null (1);
    }
  switch (plan->sink)
    {
    case LOG_SINK_FILE:
      if (plan->fd >= 0)
        {
          dup2 (plan->fd, 2);
          close (plan->fd);
          plan->fd = -1;
        }
      log_use_timestamps (1);
      break;
    case LOG_SINK_SYSLOG:
      if (daemonized)
        to_dev_null (2);
      log_use_syslog (1);
      break;
    case LOG_SINK_STDERR:
      if (daemonized && !stderr_is_journal ())
        to_dev_null (2);
      break;
    }
}

/* Free the path and a descriptor not handed over. */
void
log_plan_free (struct log_plan *plan)
{
  if (plan->fd >= 0)
    close (plan->fd);
  free (plan->path);
  plan->path = NULL;
  plan->fd = -1;
}

/* Where logs go, for messages. */
const char *
log_plan_describe (const struct log_plan *plan)
{
  switch (plan->sink)
    {
    case LOG_SINK_FILE:
      return plan->path;
    case LOG_SINK_SYSLOG:
      return "syslog";
    case LOG_SINK_STDERR:
      return "stderr";
    }
  return "stderr";
}
