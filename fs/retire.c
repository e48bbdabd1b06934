/* diskshelf: sending names of replaced entries to their new inodes (see
 * retire.h for why). */
#include "retire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon.h"
#include "error.h"
#include "thread.h"

#define RETIRE_WAIT_S 10

/* The names prepared and not yet sent; the reloader alone touches
 * them, the helper thread only while the reloader waits for it. */
struct retire_batch
{
  char **names;
  size_t count;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool done;                   /* protected by lock */
  bool abandoned;              /* protected by lock: the helper frees */
};

static char **prepared;
static size_t nprepared;

struct prepare_walk
{
  struct fs_tree *fresh;
  size_t count;
};

/* Walk callback: note an old entry the fresh tree does not carry. */
static void
note_if_replaced (struct fs_entry *e, void *arg)
{
  struct prepare_walk *w = arg;
  char path[4096];
  struct fs_node *n;
  char **grown, *name;

  snprintf (path, sizeof path, "/%s", e->config->name);
  n = fs_tree_lookup (w->fresh, path);
  if (n && n->entry == e)
    return;
  grown = realloc (prepared, (nprepared + 1) * sizeof *grown);
  if (grown == NULL)
    return;
  prepared = grown;
  name = strdup (e->config->name);
  if (name == NULL)
    return;
  prepared[nprepared++] = name;
  w->count++;
}

size_t
retire_prepare (struct fs_tree *old, struct fs_tree *fresh)
{
  struct prepare_walk w = { fresh, 0 };

  if (old)
    fs_tree_for_each_entry (old, note_if_replaced, &w);
  return w.count;
}

static void
free_batch (struct retire_batch *b)
{
  for (size_t i = 0; i < b->count; i++)
    free (b->names[i]);
  free (b->names);
  pthread_mutex_destroy (&b->lock);
  pthread_cond_destroy (&b->cond);
  free (b);
}

/* Thread body: drop every prepared name from the kernel's cache. */
static void *
retire_worker (void *arg)
{
  struct retire_batch *b = arg;
  bool abandoned;

  for (size_t i = 0; i < b->count; i++)
    {
      int r = fs_forget_name (b->names[i]);
      if (r < 0)
        log_debug ("%s: the old version stays cached for up to 1 s: %s",
                   b->names[i], strerror (-r));
    }
  pthread_mutex_lock (&b->lock);
  b->done = true;
  abandoned = b->abandoned;
  pthread_cond_broadcast (&b->cond);
  pthread_mutex_unlock (&b->lock);
  if (abandoned)
    free_batch (b);
  return NULL;
}

void
retire_run (struct daemon *d)
{
  struct retire_batch *b;
  struct timespec until;
  pthread_t t;
  bool done;

  (void) d;
  if (nprepared == 0)
    return;
  b = calloc (1, sizeof *b);
  if (b == NULL)
    return;   /* the names time out in the kernel (1 s) */
  b->names = prepared;
  b->count = nprepared;
  prepared = NULL;
  nprepared = 0;
  pthread_mutex_init (&b->lock, NULL);
  pthread_cond_init (&b->cond, NULL);
  if (thread_create ("ds-retire", &t, NULL, retire_worker, b) != 0)
    {
      retire_worker (b);
      free_batch (b);
      return;
    }
  clock_gettime (CLOCK_REALTIME, &until);
  until.tv_sec += RETIRE_WAIT_S;
  pthread_mutex_lock (&b->lock);
  while (!b->done
         && pthread_cond_timedwait (&b->cond, &b->lock, &until) == 0)
    ;
  done = b->done;
  if (!done)
    b->abandoned = true;
  pthread_mutex_unlock (&b->lock);
  if (done)
    {
      pthread_join (t, NULL);
      free_batch (b);
    }
  else
    {
      log_warning ("reload: the mount did not answer for %d s; changed "
                   "entries may show their old version a moment longer",
                   RETIRE_WAIT_S);
      pthread_detach (t);
    }
}
