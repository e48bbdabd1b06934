/* diskshelf: private header of the remote-bytes engine (backends/remote/).
 *
 *   object.c  open/close of readers and objects, the registry of open
 *             objects (one per source), status
 *   chunks.c  the chunk table (single flight), job queues, fetching
 *             threads, read-ahead, the storer thread, the memory LRU
 *   memory.c  the process-wide budget of chunk buffers
 *
 * Thread model: see remote.h.  `lock` of an object protects everything
 * marked so; the memory budget has its own lock, taken inside an
 * object's lock and never the other way round.
 */
#ifndef DISKSHELF_REMOTE_INTERNAL_H
#define DISKSHELF_REMOTE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "remote.h"
#include "seqdetect.h"

#define REMOTE_BUCKETS 256
#define REMOTE_RA_MIN 4             /* MiB of read-ahead at first */
#define REMOTE_RA_MAX 32            /* MiB of read-ahead at most */
#define REMOTE_SEQ_SLACK (1024 * 1024) /* "sequential" tolerance, bytes */
#define REMOTE_MEM_CHUNKS 64        /* MiB of unstored chunks per object */
#define REMOTE_IDLE_CONTEXTS 8      /* readers' fetch contexts kept */
#define REMOTE_RANDOM_AFTER 8       /* non-sequential misses: random */
#define REMOTE_DIRECT_MAX (128 * 1024) /* random misses fetched directly */
#define REMOTE_FILL_WORKERS 1       /* workers busy with fill at once */
#define REMOTE_STORE_MAX 64         /* fetched chunks waiting for disk */
#define REMOTE_STORE_WAIT_S 2       /* then wait this long before skipping */
#define REMOTE_MIN_UNIT (16 * 1024) /* smallest unit (a BEP 3 block) */

enum chunk_state { CHUNK_FETCHING, CHUNK_READY, CHUNK_FAILED };
enum fetch_kind { FETCH_FOREGROUND, FETCH_READAHEAD, FETCH_FILL };

/* One chunk being fetched or held in memory. */
struct chunk
{
  uint64_t index;
  enum chunk_state state;      /* protected by lock */
  unsigned refs;               /* table + readers; protected by lock */
  bool in_table;               /* protected by lock */
  bool queued;                 /* in the job queue; protected by lock */
  bool stored;                 /* kept by the disk cache */
  bool fill;                   /* background fill, not read-ahead */
  bool streamed;               /* fetched as read-ahead, or read by a
                                  sequential reader: stored
                                  DISK_CACHE_STREAMED; atomic */
  char *buf;                   /* REMOTE_CHUNK bytes (len used); taken
                                  by the worker that fetches it */
  size_t len;
  int err;                     /* negative errno when FAILED */
  char *message;               /* the error message when FAILED */
  double failed_at;            /* clock_seconds () when it FAILED; it
                                  stays in the table, without a buffer,
                                  for the fetcher's fail_hold */
  struct chunk *hnext;         /* hash chain; protected by lock */
  struct chunk *qnext;         /* job queue; protected by lock */
  struct chunk *lprev, *lnext; /* memory LRU; protected by lock */
};

/* A FIFO of queued chunks, linked through chunk.qnext. */
struct chunk_queue
{
  struct chunk *head, *tail;
};

struct remote_object
{
  /* Fixed after open. */
  const struct remote_fetcher_ops *ops;
  void *source;
  char *kind, *key, *etag, *last_modified;   /* the identity */
  char *label, *display;
  uint64_t size, nchunks;
  size_t chunk;                     /* the unit fetched and kept, bytes:
                                       REMOTE_CHUNK, or a torrent's piece
                                       (a divisor or multiple of it) */
  unsigned ra_min, ra_max;          /* read-ahead window, units (4 and
                                       32 MiB) */
  unsigned mem_units;               /* unstored units kept (64 MiB) */
  struct disk_cache_object *dc;     /* NULL without a disk cache */

  struct remote_object *next;       /* registry; registry lock */
  unsigned readers;                 /* registry lock */

  pthread_mutex_t lock;
  pthread_cond_t chunk_cond;        /* a chunk finished */
  pthread_cond_t work_cond;         /* jobs queued, memory, or closing */
  struct chunk *table[REMOTE_BUCKETS]; /* protected by lock */
  struct chunk_queue queue;         /* reads, read-ahead; lock */
  struct chunk_queue fill_queue;    /* background fill; lock */
  unsigned fill_active;             /* fills being fetched; lock */
  struct chunk_queue store_queue;   /* fetched, to write; lock */
  unsigned nstore;                  /* chunks in store_queue; lock */
  unsigned storers;                 /* storer threads (0 or 1); lock */
  pthread_cond_t store_cond;        /* store_queue grew, or closing */
  pthread_cond_t store_space;       /* store_queue shrank */
  struct chunk *lru_head, *lru_tail;/* protected by lock */
  unsigned nmem;                    /* chunks in the LRU; protected by lock */
  unsigned nbufs;                   /* buffers held by chunks; lock */
  void *contexts[REMOTE_IDLE_CONTEXTS]; /* readers' idle contexts; lock */
  unsigned ncontexts;               /* protected by lock */
  unsigned workers, idle, max_workers; /* protected by lock */
  unsigned inflight;                /* queued + fetching, fill excluded;
                                       protected by lock */
  unsigned pending;                 /* every queued + fetching chunk;
                                       protected by lock */
  bool closing;                     /* protected by lock */

  atomic_bool changed;              /* the object changed: EIO */
  _Atomic uint64_t waits;           /* reads that waited for a fetch */
};

/* One opener's view: the object plus its own sequential detector. */
struct remote_reader
{
  struct remote_object *o;
  /* Read-ahead of this reader's sequential stream; o->lock. */
  struct seq_detector seq;
  uint64_t ra_next;                 /* first chunk not yet scheduled */
  unsigned ra_window;               /* 0 = not sequential */
};

/* chunks.c */
int remote_chunks_pread (struct remote_reader *r, void *buf, size_t count,
                         uint64_t offset);
int remote_chunks_prefetch (struct remote_reader *r, uint64_t offset,
                            uint64_t length);
void remote_chunks_shutdown (struct remote_object *o);
void remote_note_stale (struct remote_object *o);
unsigned remote_chunks_trim (struct remote_object *o, unsigned keep);
int remote_chunks_peek (struct remote_object *o, void *buf, size_t count,
                        uint64_t offset);
bool remote_chunks_holds (struct remote_object *o, uint64_t offset,
                          size_t count);

/* memory.c: chunk buffers under the process-wide budget. */
char *remote_buf_get (struct remote_object *o, bool must);
void remote_buf_put (struct remote_object *o, char *buf);
void remote_buf_trim (void);
unsigned remote_reclaim (struct remote_object *self);

#endif
