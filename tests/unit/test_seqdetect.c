/* Unit tests of the shared sequential-reader detector
 * (common/seqdetect.c): the first read is never sequential, slack on
 * either side, asymmetric windows, run and random counts, and the bare
 * rule on an end the caller keeps. */
#include <stdint.h>

#include "seqdetect.h"

#include "check.h"

#define MIB (1024ull * 1024)

int
main (void)
{
  struct seq_detector d;

  seq_init (&d);
  CHECK (!seq_note (&d, 0, 4096, MIB));          /* a lone probe */
  CHECK (d.random == 1 && d.run == 0);
  CHECK (seq_note (&d, 4096, 4096, MIB));        /* follows it */
  CHECK (d.run == 1 && d.random == 0 && d.end == 8192);
  /* Out of order within the slack: sequential, the end stays furthest. */
  CHECK (seq_note (&d, 8192 + 65536, 4096, MIB));
  CHECK (seq_note (&d, 8192, 4096, MIB));
  CHECK (d.end == 8192 + 65536 + 4096 && d.run == 3);
  /* Far away: a new stream there. */
  CHECK (!seq_note (&d, 100 * MIB, 4096, MIB));
  CHECK (d.end == 100 * MIB + 4096 && d.run == 0 && d.random == 1);
  CHECK (!seq_note (&d, 10 * MIB, 4096, MIB));
  CHECK (d.random == 2);

  /* Asymmetric windows (the NBD read-ahead's rule). */
  d.end = 10 * MIB;
  CHECK (seq_within (&d, 10 * MIB, 2 * MIB, 0));
  CHECK (seq_within (&d, 8 * MIB, 2 * MIB, 0));
  CHECK (!seq_within (&d, 8 * MIB - 1, 2 * MIB, 0));
  CHECK (!seq_within (&d, 10 * MIB + 1, 2 * MIB, 0));
  CHECK (seq_within (&d, 14 * MIB, 2 * MIB, 4 * MIB));
  CHECK (!seq_within (&d, 14 * MIB + 1, 2 * MIB, 4 * MIB));
  CHECK (seq_continues (&d, 11 * MIB, MIB) && !seq_continues (&d, 8 * MIB, MIB));

  /* The bare rule, on an end kept by the caller (the xz layer's). */
  CHECK (seq_offset_near (4 * MIB, 0, 4 * MIB, 4 * MIB));
  CHECK (seq_offset_near (4 * MIB, 8 * MIB, 4 * MIB, 4 * MIB));
  CHECK (!seq_offset_near (4 * MIB, 8 * MIB + 1, 4 * MIB, 4 * MIB));
  CHECK (!seq_offset_near (UINT64_MAX / 2, 0, 4 * MIB, 4 * MIB));
  return check_failures ? 1 : 0;
}
