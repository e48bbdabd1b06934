/* diskshelf: one process-wide run of zero bytes to reply from.
 *
 * A hole (a block that decodes to zeroes) is answered from here instead
 * of from a buffer memset for each read.  The run is an anonymous
 * read-only mapping that is never written, so every page of it is the
 * kernel's shared zero page: it costs no memory however large it is.
 *
 * Thread model: safe from any thread; the mapping is made once and
 * lives as long as the process.
 */
#ifndef DISKSHELF_ZEROES_H
#define DISKSHELF_ZEROES_H

#include <stddef.h>

/* The most bytes zeroes () gives. */
#define ZEROES_MAX ((size_t) 64 << 20)

/* count zero bytes, read-only; NULL when count > ZEROES_MAX or the
 * mapping could not be made. */
const void *zeroes (size_t count);

#endif
