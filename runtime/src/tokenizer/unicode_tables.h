/* Unicode facts for the tokenizer's pre-tokenizer, generated into unicode_tables.c by
 * scripts/gen_unicode_tables.py (see that file for the Unicode version). */
#ifndef EMBER_UNICODE_TABLES_H
#define EMBER_UNICODE_TABLES_H

#include <stddef.h>
#include <stdint.h>

/* General-category flags, one per code point (exactly one bit of 0x00FF is set). */
#define EM_UCAT_UNDEFINED   0x0001u  /* Cn (unassigned) */
#define EM_UCAT_NUMBER      0x0002u  /* \p{N} */
#define EM_UCAT_LETTER      0x0004u  /* \p{L} */
#define EM_UCAT_SEPARATOR   0x0008u  /* \p{Z} */
#define EM_UCAT_MARK        0x0010u  /* \p{M} */
#define EM_UCAT_PUNCTUATION 0x0020u  /* \p{P} */
#define EM_UCAT_SYMBOL      0x0040u  /* \p{S} */
#define EM_UCAT_CONTROL     0x0080u  /* Cc, Cf, Co, Cs */
#define EM_UCAT_MASK        0x00FFu

typedef struct em_ucat_range {
    uint32_t start;   /* flags hold from start up to the next range's start */
    uint16_t flags;
} em_ucat_range;

typedef struct em_case_pair {
    uint32_t cp;
    uint32_t lower;
} em_case_pair;

extern const char em_unicode_version[];
extern const em_ucat_range em_ucat_ranges[];   /* sorted by start; em_ucat_ranges[0].start == 0 */
extern const size_t em_ucat_ranges_n;
extern const em_case_pair em_lower_map[];      /* sorted by cp; simple lower-case mapping */
extern const size_t em_lower_map_n;

#endif /* EMBER_UNICODE_TABLES_H */
