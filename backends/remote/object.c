/* diskshelf: remote objects and their readers: one object per source
 * (a process-wide registry keyed by identity), reference counting,
 * status.  See remote.h. */
#include "internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "layer.h"

/* Open objects, found by identity; protected by registry_lock, which is
 * taken before an object's lock (and only tried, never waited for, the
 * other way: remote_reclaim). */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct remote_object *registry;

/* Equal strings, NULL only equal to NULL. */
static bool
same (const char *a, const char *b)
{
  return a == b || (a && b && strcmp (a, b) == 0);
}

/* True when o is the object of identity id. */
static bool
matches (const struct remote_object *o, const struct remote_identity *id)
{
  return o->size == id->size && same (o->kind, id->kind)
    && same (o->key, id->key) && same (o->etag, id->etag)
    && same (o->last_modified, id->last_modified);
}

/* strdup keeping NULL; false when out of memory. */
static bool
dup (char **dst, const char *src)
{
  *dst = src ? strdup (src) : NULL;
  return src == NULL || *dst != NULL;
}

/* Free an object that has no threads and no chunks any more. */
static void
object_free (struct remote_object *o)
{
  if (o->source && o->ops->free)
    o->ops->free (o->source);
  if (o->dc)
    disk_cache_close_object (o->dc);
  free (o->kind);
  free (o->key);
  free (o->etag);
  free (o->last_modified);
  free (o->label);
  free (o->display);
  pthread_mutex_destroy (&o->lock);
  pthread_cond_destroy (&o->chunk_cond);
  pthread_cond_destroy (&o->work_cond);
  pthread_cond_destroy (&o->store_cond);
  pthread_cond_destroy (&o->store_space);
  free (o);
}

/* A new object for id (without its source yet). */
static int
object_new (const struct remote_identity *id,
            const struct remote_settings *set,
            const struct remote_fetcher_ops *ops, struct remote_object **out)
{
  struct remote_object *o = calloc (1, sizeof *o);

  if (o == NULL)
    return error_set (ENOMEM, "%s: out of memory", set->label);
  pthread_mutex_init (&o->lock, NULL);
  pthread_cond_init (&o->chunk_cond, NULL);
  pthread_cond_init (&o->work_cond, NULL);
  pthread_cond_init (&o->store_cond, NULL);
  pthread_cond_init (&o->store_space, NULL);
  o->ops = ops;
  o->size = id->size;
  o->chunk = set->unit ? set->unit : REMOTE_CHUNK;
  if (o->chunk < REMOTE_MIN_UNIT
      || (o->chunk < REMOTE_CHUNK && REMOTE_CHUNK % o->chunk != 0)
      || (o->chunk > REMOTE_CHUNK && o->chunk % REMOTE_CHUNK != 0))
    o->chunk = REMOTE_CHUNK;
  o->nchunks = (id->size + o->chunk - 1) / o->chunk;
  o->ra_min = REMOTE_RA_MIN * (uint64_t) REMOTE_CHUNK / o->chunk;
  o->ra_max = REMOTE_RA_MAX * (uint64_t) REMOTE_CHUNK / o->chunk;
  o->mem_units = REMOTE_MEM_CHUNKS * (uint64_t) REMOTE_CHUNK / o->chunk;
  if (o->ra_min < 1)
    o->ra_min = 1;
  if (o->ra_max < 2)
    o->ra_max = 2;
  if (o->mem_units < 4)
    o->mem_units = 4;
  o->max_workers = set->connections > 0 ? set->connections : 1;
  if (!dup (&o->kind, id->kind) || !dup (&o->key, id->key)
      || !dup (&o->etag, id->etag)
      || !dup (&o->last_modified, id->last_modified)
      || !dup (&o->label, set->label) || !dup (&o->display, set->display))
    {
      object_free (o);
      return error_set (ENOMEM, "%s: out of memory", set->label);
    }
  if (set->disk_cache)
    {
      struct disk_cache_validators v = {
        .kind = id->kind, .key = id->key, .size = id->size,
        .etag = id->etag, .last_modified = id->last_modified };
      if (disk_cache_open_object (set->disk_cache, &v, &o->dc) < 0)
        {
          log_warning ("%s: %s; reading uncached", set->label,
                       error_message ());
          o->dc = NULL;
        }
    }
  *out = o;
  return 0;
}

/* The daemon is going away (layer_abort_waits): stop every object's
 * fetcher, so no reader keeps waiting for a remote that may never
 * answer (a swarm waits for its whole timeout otherwise). */
static void
abort_all (void)
{
  pthread_mutex_lock (&registry_lock);
  for (struct remote_object *o = registry; o; o = o->next)
    if (o->ops->stop)
      o->ops->stop (o->source);
  pthread_mutex_unlock (&registry_lock);
}

static pthread_once_t abort_once = PTHREAD_ONCE_INIT;

static void
register_abort (void)
{
  layer_on_abort (abort_all);
}

/* Open a reader, sharing the object of the same identity if open. */
int
remote_open (const struct remote_identity *id,
             const struct remote_settings *set,
             const struct remote_fetcher_ops *ops, void *source,
             struct remote_reader **out)
{
  struct remote_reader *rd = calloc (1, sizeof *rd);
  struct remote_object *o;
  int shared = 0, r;

  if (rd == NULL)
    return error_set (ENOMEM, "%s: out of memory", set->label);
  seq_init (&rd->seq);
  pthread_once (&abort_once, register_abort);
  pthread_mutex_lock (&registry_lock);
  for (o = registry; o; o = o->next)
    if (o->ops == ops && !atomic_load (&o->changed) && matches (o, id))
      break;
  if (o)
    shared = 1;
  else
    {
      /* Opening the disk-cache object under the registry lock keeps two
       * opens of one identity from racing to two objects. */
      r = object_new (id, set, ops, &o);
      if (r < 0)
        {
          pthread_mutex_unlock (&registry_lock);
          free (rd);
          return r;
        }
      o->source = source;
      o->next = registry;
      registry = o;
    }
  o->readers++;
  pthread_mutex_unlock (&registry_lock);
  rd->o = o;
  *out = rd;
  return shared;
}

/* Drop a reader; the last one stops and frees the object. */
void
remote_close (struct remote_reader *rd)
{
  struct remote_object *o;
  bool last;

  if (rd == NULL)
    return;
  o = rd->o;
  free (rd);
  pthread_mutex_lock (&registry_lock);
  last = --o->readers == 0;
  if (last)
    for (struct remote_object **p = &registry; *p; p = &(*p)->next)
      if (*p == o)
        {
          *p = o->next;
          break;
        }
  pthread_mutex_unlock (&registry_lock);
  if (!last)
    return;
  remote_chunks_shutdown (o);
  object_free (o);
}

/* The object's source. */
void *
remote_source (struct remote_reader *rd)
{
  return rd->o->source;
}

/* The reader's object (see remote.h). */
struct remote_object *
remote_object_of (struct remote_reader *rd)
{
  return rd->o;
}

/* The release of a lent data file: drop the pin. */
static void
unpin_whole (void *arg)
{
  struct remote_object *o = arg;

  if (o->dc)
    disk_cache_unpin_whole (o->dc);
}

/* Lend the complete disk-cache copy (see remote.h). */
int
remote_lend_file (struct remote_reader *rd, struct layer_lend *out)
{
  int fd;

  if (rd->o->dc == NULL || remote_changed (rd)
      || disk_cache_pin_whole (rd->o->dc, &fd) < 0)
    return 0;
  out->fd = fd;
  out->release = unpin_whole;
  out->arg = rd->o;
  return 1;
}

/* Read what the object holds, never fetching. */
int
remote_peek (struct remote_object *o, void *buf, size_t count,
             uint64_t offset)
{
  return remote_chunks_peek (o, buf, count, offset);
}

/* Whether the object holds a range. */
bool
remote_holds (struct remote_object *o, uint64_t offset, size_t count)
{
  return remote_chunks_holds (o, offset, count);
}

/* Read through the engine. */
int
remote_pread (struct remote_reader *rd, void *buf, size_t count,
              uint64_t offset)
{
  return remote_chunks_pread (rd, buf, count, offset);
}

/* Queue fetches of a range. */
int
remote_prefetch (struct remote_reader *rd, uint64_t offset, uint64_t length)
{
  return remote_chunks_prefetch (rd, offset, length);
}

/* The object changed: fail reads from now on, drop the cached copy
 * (once). */
void
remote_note_stale (struct remote_object *o)
{
  if (atomic_exchange (&o->changed, true))
    return;
  if (o->dc)
    disk_cache_invalidate (o->dc);
}

void
remote_mark_changed (struct remote_reader *rd)
{
  remote_note_stale (rd->o);
}

bool
remote_changed (struct remote_reader *rd)
{
  return atomic_load (&rd->o->changed);
}

/* The engine's status lines for the object, then its disk cache's. */
void
remote_status (struct remote_reader *rd, FILE *out)
{
  struct remote_object *o = rd->o;
  const char *n = o->ops->name;

  fprintf (out, "%s-reads-waiting-for-fetch: %" PRIu64 "\n", n,
           atomic_load (&o->waits));
  pthread_mutex_lock (&registry_lock);
  fprintf (out, "%s-shared-by: %u\n", n, o->readers);
  pthread_mutex_unlock (&registry_lock);
  pthread_mutex_lock (&o->lock);
  fprintf (out, "%s-pending-chunks: %u\n", n, o->pending);
  pthread_mutex_unlock (&o->lock);
  if (o->dc)
    disk_cache_object_status (o->dc, out);
}

/* Free memory-cached chunks of objects other than self that nobody
 * reads now, to make room under the memory budget.  Objects whose lock
 * is busy are skipped (no waiting on a lock here: the caller may own
 * another object's).  Returns how many chunks went. */
unsigned
remote_reclaim (struct remote_object *self)
{
  unsigned freed = 0;

  pthread_mutex_lock (&registry_lock);
  for (struct remote_object *o = registry; o; o = o->next)
    if (o != self && pthread_mutex_trylock (&o->lock) == 0)
      {
        freed += remote_chunks_trim (o, 0);
        pthread_mutex_unlock (&o->lock);
      }
  pthread_mutex_unlock (&registry_lock);
  return freed;
}
