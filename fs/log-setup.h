/* diskshelf: choosing where the daemon's log lines go.
 *
 *   -f (foreground)            stderr (under systemd that is the journal)
 *   --log-file=PATH            PATH, appended to, foreground or not
 *   under systemd              stderr, when $JOURNAL_STREAM names it, with
 *                              "<N>" level prefixes the journal reads
 *   background                 syslog, when /dev/log is a socket
 *   background, no syslog      a file: /var/log/diskshelf.log for root,
 *                              $XDG_STATE_HOME/diskshelf/diskshelf.log
 *                              (~/.local/state/...) otherwise; the
 *                              starting command says so on stderr
 *
 * Ownership: a log_plan owns its path and file descriptor until
 * log_plan_apply hands the descriptor to stderr.
 * Thread model: main thread only, before any other thread starts.
 */
#ifndef DISKSHELF_LOG_SETUP_H
#define DISKSHELF_LOG_SETUP_H

#include <stdbool.h>

#include "options.h"

enum log_sink { LOG_SINK_STDERR, LOG_SINK_SYSLOG, LOG_SINK_FILE };

struct log_plan
{
  enum log_sink sink;
  char *path;          /* LOG_SINK_FILE: the file; else NULL */
  int fd;              /* LOG_SINK_FILE: open for appending; else -1 */
  bool fallback;       /* a file because there is no syslog socket */
};

/* Decide where logs go and open the log file if there is one.  Returns
 * 0 or a negative errno with a message (a log file that cannot be
 * opened). */
int log_plan_choose (const struct daemon_options *o, struct log_plan *plan);

/* Start logging as planned.  In the background (daemonized true) stdin
 * and stdout go to /dev/null and stderr to the log file, the journal
 * stream or /dev/null, so the caller's terminal or pipe is let go. */
void log_plan_apply (struct log_plan *plan, bool daemonized);

/* Free what the plan still owns. */
void log_plan_free (struct log_plan *plan);

/* One line for --help and messages: where background logs go now. */
const char *log_plan_describe (const struct log_plan *plan);

#endif
