/* diskshelf: the tiny check macro the C unit tests share.
 *
 * CHECK (cond) reports a failed condition with its file and line and
 * counts it in check_failures, which a test's main turns into its exit
 * status. */
#ifndef DISKSHELF_CHECK_H
#define DISKSHELF_CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond))                                                        \
      {                                                                 \
        fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__,         \
                 __LINE__, #cond);                                      \
        check_failures++;                                               \
      }                                                                 \
  } while (0)

#endif
