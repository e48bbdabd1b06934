/* diskshelf: telling a service manager how the daemon is doing.
 *
 * Speaks systemd's notify protocol (sd_notify(3)): one datagram of
 * "KEY=VALUE\n" lines to the Unix socket named by $NOTIFY_SOCKET
 * ("/path" or "@abstract").  Written here instead of linking libsystemd:
 * the protocol is a dozen lines and the daemon then runs the same with
 * or without systemd installed.
 *
 * notify_init reads and unsets $NOTIFY_SOCKET (so captive servers we
 * start do not talk to systemd in our name); without it every call is a
 * no-op.
 *
 * Thread model: notify_init once, before threads start; notify_send from
 * any thread afterwards (each call sends one datagram on a fresh socket).
 */
#ifndef DISKSHELF_NOTIFY_H
#define DISKSHELF_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

/* Remember and unset $NOTIFY_SOCKET.  Returns true when there is one. */
bool notify_init (void);

/* Send one message, e.g. notify_send ("READY=1\nSTATUS=%s", text).
 * Failures are logged at debug level only: a service manager that went
 * away must not stop the mount. */
void notify_send (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

/* "READY=1" with a STATUS line giving the entry counts. */
void notify_ready (size_t entries, size_t broken);

/* "RELOADING=1" with MONOTONIC_USEC, sent before a catalog reload. */
void notify_reloading (void);

/* notify_ready with the counts of the daemon's current tree. */
struct daemon;
void daemon_notify_ready (struct daemon *d);

/* "STOPPING=1", sent when the daemon starts to shut down. */
void notify_stopping (void);

#endif
