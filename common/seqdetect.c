/* diskshelf: the sequential-reader detector (see seqdetect.h). */
#include "seqdetect.h"

#include <limits.h>

/* Start with no stream: far from any offset a first read can have. */
void
seq_init (struct seq_detector *d)
{
  d->end = UINT64_MAX / 2;
  d->run = 0;
  d->random = 0;
}

/* True when offset is within [end - behind, end + ahead]. */
bool
seq_offset_near (uint64_t end, uint64_t offset, uint64_t behind,
                 uint64_t ahead)
{
  return offset >= end ? offset - end <= ahead : end - offset <= behind;
}

bool
seq_within (const struct seq_detector *d, uint64_t offset, uint64_t behind,
            uint64_t ahead)
{
  return seq_offset_near (d->end, offset, behind, ahead);
}

/* True when offset is within slack of where the stream ended. */
bool
seq_continues (const struct seq_detector *d, uint64_t offset,
               uint64_t slack)
{
  return seq_within (d, offset, slack, slack);
}

/* Move the stream on, or restart it at this read. */
bool
seq_note (struct seq_detector *d, uint64_t offset, uint64_t count,
          uint64_t slack)
{
  uint64_t end = offset + count;

  if (seq_continues (d, offset, slack))
    {
      if (end > d->end)
        d->end = end;
      if (d->run < UINT_MAX)
        d->run++;
      d->random = 0;
      return true;
    }
  d->end = end;
  d->run = 0;
  if (d->random < UINT_MAX)
    d->random++;
  return false;
}
