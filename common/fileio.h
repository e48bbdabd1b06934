/* diskshelf: whole writes and zeroed ranges on a file descriptor, the
 * two things the local file layer and the overlay's store both need.
 *
 * Each returns 0 or a negative errno with a message recorded (the
 * caller prefixes it with its own context: which file, which entry).
 * Thread model: none of their own; pwrite and fallocate are safe to call
 * on one fd from many threads for distinct ranges.
 */
#ifndef DISKSHELF_FILEIO_H
#define DISKSHELF_FILEIO_H

#include <stddef.h>
#include <stdint.h>

/* Write all count bytes at offset, retrying short writes and EINTR. */
int fd_pwrite_all (int fd, const void *buf, size_t count, uint64_t offset);

/* Make [offset, offset+length) read as zeroes without changing the file
 * size: FALLOC_FL_ZERO_RANGE first when try_zero_range (it keeps the
 * blocks allocated), then FALLOC_FL_PUNCH_HOLE, and if the file system
 * can do neither, write zeroes 1 MiB at a time. */
int fd_zero_range (int fd, uint64_t offset, uint64_t length,
                   int try_zero_range);

#endif
