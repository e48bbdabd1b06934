/* diskshelf: helper threads that never take the daemon's signals. */
#include "thread.h"

#include <stdio.h>

void
thread_async_signals (sigset_t *set)
{
  static const int signals[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1,
                                 SIGUSR2, SIGALRM, SIGCHLD, SIGPIPE };

  sigemptyset (set);
  for (unsigned i = 0; i < sizeof signals / sizeof signals[0]; i++)
    sigaddset (set, signals[i]);
}

int
thread_create (const char *name, pthread_t *thread,
               const pthread_attr_t *attr, void *(*start) (void *),
               void *arg)
{
  char comm[16];
  sigset_t block, old;
  int r;

  /* The new thread inherits the creator's mask: block, create, restore. */
  thread_async_signals (&block);
  pthread_sigmask (SIG_BLOCK, &block, &old);
  r = pthread_create (thread, attr, start, arg);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (r == 0)
    {
      /* The kernel keeps 15 bytes; a name is a diagnostic, so a failure
       * to set it is not one to report. */
      snprintf (comm, sizeof comm, "%s", name);
      (void) pthread_setname_np (*thread, comm);
    }
  return r;
}
