/* diskshelf: the one error convention and the daemon's log.
 *
 * Every function that can fail returns a negative errno (or NULL) and
 * records a human message with error_set(): context first, then the
 * cause, e.g. "xz: disk.img.xz: block 12: checksum mismatch".  The
 * message is kept per thread, so the caller that sees the negative errno
 * can read it back with error_message() and log it or show it.
 *
 * Thread model: all functions are safe from any thread.
 */
#ifndef DISKSHELF_ERROR_H
#define DISKSHELF_ERROR_H

#include <stdarg.h>

/* Record a message for this thread and return -errnum (errnum > 0).
 * The format takes printf directives; %m is not supported, use
 * strerror (errnum) explicitly. */
int error_set (int errnum, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* Prefix this thread's recorded message with "CONTEXT: " and return
 * -errnum unchanged; used to add context while an error climbs up. */
int error_prefix (int errnum, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

/* The last message recorded on this thread ("" if none).  Owned by the
 * error module; valid until the next error_set on this thread. */
const char *error_message (void);

/* Forget this thread's message. */
void error_clear (void);

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO,
                 LOG_LEVEL_DEBUG };

/* Where log lines go: stderr (foreground) or syslog (daemon). */
void log_use_syslog (int yes);

/* Put the local date and time in front of stderr lines (for a log
 * file; syslog and the journal stamp lines themselves). */
void log_use_timestamps (int yes);

/* Start stderr lines with "<N>", the syslog priority, which the systemd
 * journal reads as the line's level (used when stderr is the journal). */
void log_use_level_prefix (int yes);

/* Lines above this level are dropped (default LOG_LEVEL_INFO). */
void log_set_level (enum log_level level);

/* Write one log line "diskshelf: LEVEL: message". */
void log_msg (enum log_level level, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

#define log_error(...) log_msg (LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg (LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_info(...) log_msg (LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg (LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
