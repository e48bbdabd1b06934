/* diskshelf: the one sequential-reader detector.
 *
 * A read continues a stream when it starts within `slack` bytes of
 * where the stream's last read ended, on either side: the kernel sends
 * a sequential reader's requests in parallel and slightly out of order,
 * so a little behind counts too.  Users: the remote-bytes engine
 * (backends/remote/, per reader of an object: HTTP and torrents) and
 * the NBD read-ahead layer (backends/readahead.c), which keeps several
 * streams of these with its own, measured, slack on each side.  The xz
 * layer applies the same rule (seq_offset_near) to an end it keeps in
 * an atomic.
 *
 * Thread model: none; the caller serialises calls on one detector (its
 * own lock).  The struct is plain data, owned by its user.
 */
#ifndef DISKSHELF_SEQDETECT_H
#define DISKSHELF_SEQDETECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct seq_detector
{
  uint64_t end;      /* where the stream's furthest read ended */
  unsigned run;      /* reads in a row that continued the stream */
  unsigned random;   /* reads in a row that did not */
};

/* A detector with no stream yet: the first read (a magic-byte probe,
 * say) is never sequential; a second one that follows it is. */
void seq_init (struct seq_detector *d);

/* True when offset lies in [end - behind, end + ahead]: the one rule of
 * "this read continues a stream that ended at end".  For callers that
 * keep the end themselves: the xz layer holds it in an atomic, so that
 * its decode path takes no lock. */
bool seq_offset_near (uint64_t end, uint64_t offset, uint64_t behind,
                      uint64_t ahead);

/* seq_offset_near on the detector's stream. */
bool seq_within (const struct seq_detector *d, uint64_t offset,
                 uint64_t behind, uint64_t ahead);

/* seq_within with the same slack on both sides. */
bool seq_continues (const struct seq_detector *d, uint64_t offset,
                    uint64_t slack);

/* Note a read of [offset, offset+count): returns true when it continued
 * the stream (run counts it, random restarts), false when it started a
 * new one there (random counts it). */
bool seq_note (struct seq_detector *d, uint64_t offset, uint64_t count,
               uint64_t slack);

#endif
