/* diskshelf: helper threads that never take the daemon's signals.
 *
 * A signal sent to the process (kill, systemd's SIGTERM, Ctrl-C) goes to
 * one thread that does not block it.  libfuse's handler only raises a
 * flag that the main thread notices when its wait is interrupted, and the
 * catalog watcher takes SIGHUP from a signalfd, which sees only signals
 * every thread blocks.  So every thread but the main one must block the
 * daemon's asynchronous signals: create helper threads with
 * thread_create, never with pthread_create.
 *
 * Thread model: safe from any thread.
 */
#ifndef DISKSHELF_THREAD_H
#define DISKSHELF_THREAD_H

#include <pthread.h>
#include <signal.h>

/* Fill set with the asynchronous signals the daemon handles in its main
 * thread only (SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
 * SIGALRM, SIGCHLD, SIGPIPE); synchronous ones (SIGSEGV, ...) stay
 * deliverable so a crash is still reported. */
void thread_async_signals (sigset_t *set);

/* pthread_create, with the new thread blocking thread_async_signals()
 * and named `name` (up to 15 bytes, longer is cut) for top -H, ps -L,
 * perf and gdb: "ds-fetch", "ds-bt-peer", ...  The FUSE workers keep
 * the process's name.  Returns 0 or a positive error number, like
 * pthread_create. */
int thread_create (const char *name, pthread_t *thread,
                   const pthread_attr_t *attr, void *(*start) (void *),
                   void *arg);

#endif
