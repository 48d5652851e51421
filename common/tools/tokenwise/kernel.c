/* The token-wise entropy payload's level coding (docs/bitstream.md, "Entropy payload";
 * common/tools/tokenwise/sq.py), compiled: the same procedure as sq.py's numpy reference,
 * which tests hold it to (tests/common/tools/test_tokenwise_kernel.py), at tens of millions of
 * symbols per second.
 *
 * The ANS coder is the payload's: 64-bit state x, 32-bit words, 24-bit probabilities.
 *   encode (start, f), symbols in reverse:  if x >> 40 >= f, emit x mod 2^32 and x >>= 32;
 *                                           x = (x div f) << 24 + x mod f + start
 *   decode:  slot = x mod 2^24, the symbol whose range holds it, x = f·(x >> 24) + slot − start;
 *            if x < 2^32 and words are left, x = x << 32 | the last word
 *   data:    the emitted words, then x's low and high words (high left out when 0, both when
 *            x = 0); a decoder starts from the last two words (one word: x = that word).
 * Quantile ranges, from the models' integer parameters:
 *   binary, P1 = p1·2^24:   0 gets [0, s1), 1 gets [s1, 2^24), s1 = 1 + (2^24 − P1)(2^24 − 2) div 2^24
 *   categorical, counts c_i (n symbols, total T): start_i = floor(C_i · ((2^24 − n) / T)) + i in IEEE
 *       double (C_i = c_0 + … + c_(i−1); one division, then one product; built with -ffp-contract=off)
 *   bypass of b bits:       start = v << (24 − b), f = 2^(24 − b)
 *
 * Plain C99 without the Python API (kernel_module.c only makes the built library an importable
 * module): kernel.py calls it through ctypes, so it does not depend on numpy's version. sq.py's
 * constants arrive in tw_constants (declared there once). */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PROB_BITS 24
#define ONE ((uint64_t)1 << PROB_BITS)
#define WORD_LIMIT ((uint64_t)1 << 32)
#define NUM_SIG_CLASSES 9
#define NUM_LEVEL_CLASSES 6
#define SIG_LOCAL 8
#define LEVEL_LOCAL 7
#define NUM_SIG (NUM_SIG_CLASSES * SIG_LOCAL)
#define NUM_LEVEL (NUM_LEVEL_CLASSES * LEVEL_LOCAL)
#define NUM_SIGN 20
#define EG_ORDERS 16
#define EG_SYMBOLS 32
#define NUM_SIG_THRESHOLDS (NUM_SIG_CLASSES - 2)
#define NUM_LEVEL_THRESHOLDS (NUM_LEVEL_CLASSES - 2)
#define SIG_PATTERNS 13         /* 2·min(a,2) + 2·min(b,2) + min(c,2) + min(d,2) ≤ 12 */
#define LEVEL_PATTERNS 19       /* the same with min(·,3) ≤ 18 */

enum { TW_OK = 0, TW_DATA_LEFT_OVER = 1, TW_LEVEL_OVERFLOW = 2, TW_NO_MEMORY = 3, TW_BAD_ARGUMENTS = 4 };

/* sq.py's constants, filled by the caller (common/tools/tokenwise/kernel.py). */
typedef struct {
    int64_t sig_local_class[SIG_PATTERNS];
    int64_t level_local_class[LEVEL_PATTERNS];
    int64_t sig_thresholds[NUM_SIG_THRESHOLDS];
    int64_t level_thresholds[NUM_LEVEL_THRESHOLDS];
    int64_t sig_initial_counts[NUM_SIG_CLASSES][2];
    int64_t rescale_limit, mag_cap, max_abs_level, bypass_chunk_bits, eg_max_order, num_eg_symbols;
    int64_t num_sig_contexts, num_level_contexts, num_sign_contexts;
} tw_constants;

typedef struct {
    uint64_t state;         /* decoder: x after the levels */
    int64_t bulk_words;     /* decoder: words left before x's */
    uint32_t *words;        /* encoder: the payload's words (free with tw_free) */
    int64_t num_words;
    double ideal_bits;      /* encoder: −log2 P of the levels' symbols under the models */
    int64_t chunk;          /* the chunk size after the last chunk */
} tw_result;

typedef struct {
    int encoding;
    uint64_t x;
    const uint32_t *bulk;   /* decoder: words not yet read: bulk[0 .. bulk_len) */
    int64_t bulk_len;
    uint32_t *symbols;      /* encoder: the coded symbols in coding order, SYMBOL_* words */
    int64_t num_symbols, capacity;
    double ideal_bits;
    int failed;
} coder;

/* The encoder keeps each symbol in one 32-bit word (two for a categorical one), tagged in its
 * top two bits: binary, the bit and s1; bypass, b and the value; categorical, its start, then
 * its f. Read backwards, the tag of a categorical symbol's second word says a first one precedes. */
#define SYMBOL_BINARY 0u
#define SYMBOL_BYPASS 1u
#define SYMBOL_CATEGORICAL_START 2u
#define SYMBOL_CATEGORICAL_SIZE 3u
#define SYMBOL_TAG(word) ((word) >> 30)
#define SYMBOL_FIELD ((1u << 24) - 1)

static void grow_symbols(coder *c) {
    int64_t capacity = c->capacity ? 2 * c->capacity : 1 << 16;
    uint32_t *grown = realloc(c->symbols, (size_t)capacity * sizeof *grown);
    if (!grown) { c->failed = 1; c->num_symbols = 0; return; }   /* reported after the chunk */
    c->symbols = grown;
    c->capacity = capacity;
}

static inline void push_word(coder *c, uint32_t word) {
    if (c->num_symbols == c->capacity) grow_symbols(c);
    if (!c->failed) c->symbols[c->num_symbols++] = word;
}

static void advance(coder *c, uint64_t slot, uint64_t start, uint64_t f) {
    c->x = f * (c->x >> PROB_BITS) + slot - start;
    if (c->x < WORD_LIMIT && c->bulk_len > 0)
        c->x = (c->x << 32) | c->bulk[--c->bulk_len];
}

/* After a pass's updates: every row whose total exceeds the limit is halved, rounding up, until
 * it does not. */
static void rescale(int64_t *table, int rows, int width, int64_t limit) {
    for (int r = 0; r < rows; r++) {
        int64_t *row = table + (int64_t)r * width;
        for (;;) {
            int64_t total = 0;
            for (int i = 0; i < width; i++) total += row[i];
            if (total <= limit) break;
            for (int i = 0; i < width; i++) row[i] = (row[i] + 1) >> 1;
        }
    }
}

/* sig = 1's quantile start under KT counts (n0, n1): P1 = clamp(((2·n1 + 1)·2^24) div (2·(n0 + n1) + 2),
 * 1, 2^24 − 1), s1 = 1 + (2^24 − P1)(2^24 − 2) div 2^24. */
static uint64_t binary_split(const int64_t *counts, double *p_one) {
    int64_t p1 = ((2 * counts[1] + 1) << PROB_BITS) / (2 * (counts[0] + counts[1]) + 2);
    if (p1 < 1) p1 = 1;
    if (p1 > (int64_t)ONE - 1) p1 = (int64_t)ONE - 1;
    *p_one = (double)p1 / (double)ONE;
    return 1 + ((ONE - (uint64_t)p1) * (ONE - 2) >> PROB_BITS);
}

/* One pass of binary decisions, bits[j] in context ctx[j] (read when encoding, written when
 * decoding), under the table's counts as they stand; then the counts' updates and rescaling. */
static void binary_pass(coder *c, int64_t (*table)[2], int rows, const int32_t *ctx, int8_t *bits, int64_t n,
                        int64_t limit) {
    if (n == 0) return;
    uint64_t split[NUM_SIG];
    double p_one[NUM_SIG];
    int64_t coded[NUM_SIG][2];
    for (int r = 0; r < rows; r++) {
        split[r] = binary_split(table[r], &p_one[r]);
        coded[r][0] = coded[r][1] = 0;
    }
    for (int64_t j = 0; j < n; j++) {
        uint64_t s1 = split[ctx[j]];
        if (c->encoding) {
            push_word(c, SYMBOL_BINARY << 30 | (uint32_t)bits[j] << 24 | (uint32_t)s1);
        } else {
            uint64_t slot = c->x & (ONE - 1);
            uint64_t one = slot >= s1, mask = 0 - one;   /* no branch on a decision that is near 50/50 */
            bits[j] = (int8_t)one;
            advance(c, slot, s1 & mask, s1 + ((ONE - 2 * s1) & mask));
        }
        coded[ctx[j]][bits[j]]++;
    }
    for (int r = 0; r < rows; r++) {
        if (c->encoding) {
            if (coded[r][0]) c->ideal_bits -= (double)coded[r][0] * log2(1.0 - p_one[r]);
            if (coded[r][1]) c->ideal_bits -= (double)coded[r][1] * log2(p_one[r]);
        }
        table[r][0] += coded[r][0];
        table[r][1] += coded[r][1];
    }
    rescale(&table[0][0], rows, 2, limit);
}

/* Quantile starts of a categorical model with integer counts; starts[n] = 2^24. */
static int64_t categorical_starts(const int64_t *counts, int n, uint64_t *starts) {
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += counts[i];
    double scale = (double)(ONE - (uint64_t)n) / (double)total;
    int64_t cumulative = 0;
    for (int i = 0; i < n; i++) {
        starts[i] = (uint64_t)floor((double)cumulative * scale) + (uint64_t)i;
        cumulative += counts[i];
    }
    starts[n] = ONE;
    return total;
}

static int code_categorical(coder *c, const uint64_t *starts, int n, int symbol) {
    if (c->encoding) {
        push_word(c, SYMBOL_CATEGORICAL_START << 30 | (uint32_t)starts[symbol]);
        push_word(c, SYMBOL_CATEGORICAL_SIZE << 30 | (uint32_t)(starts[symbol + 1] - starts[symbol]));
        return symbol;
    }
    uint64_t slot = c->x & (ONE - 1);
    int lo = 0, hi = n - 1;     /* the last start ≤ slot */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (starts[mid] <= slot) lo = mid; else hi = mid - 1;
    }
    advance(c, slot, starts[lo], starts[lo + 1] - starts[lo]);
    return lo;
}

static uint64_t code_bypass(coder *c, uint64_t value, int bits) {
    uint64_t f = ONE >> bits;
    if (c->encoding) {
        c->ideal_bits += bits;
        push_word(c, SYMBOL_BYPASS << 30 | (uint32_t)bits << 16 | (uint32_t)value);
        return value;
    }
    uint64_t slot = c->x & (ONE - 1);
    value = slot >> (PROB_BITS - bits);
    advance(c, slot, value << (PROB_BITS - bits), f);
    return value;
}

static int bit_length(uint64_t v) {
    int n = 0;
    while (v) { n++; v >>= 1; }
    return n;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Everything one tensor's levels need besides the coder. */
typedef struct {
    const tw_constants *k;
    int64_t channels, height, width;
    int16_t *mag;           /* (H + 1, W + 2, C): capped magnitudes, one row on top, a column each side */
    int8_t *sign;
    int64_t *nonzero, *above_one, *positive, *negative, positions;
    int64_t *sig_class, *level_class, *sign_class;
    int64_t sig[NUM_SIG][2], gt1[NUM_LEVEL][2], gt2[NUM_LEVEL][2], sgn[NUM_SIGN][2];
    int64_t eg[EG_ORDERS][EG_SYMBOLS];
    /* one chunk */
    int32_t *ctx_sig, *ctx_level, *ctx_order, *ctx_sign, *pass_ctx, *channel;
    int64_t *element_index, *known, *at, *chunk_mag, *eg_value;
    int32_t *list1, *list2, *list3;
    int8_t *decision, *remaining;
    uint8_t *order_of;      /* Exp-Golomb order k of each (2a + 2b + c + d) div 6 ≤ MAG_CAP */
    uint64_t *suffix;
} levels_state;

/* sig_channel_class of a channel with `nonzero` nonzero levels among `positions` ≥ 1. */
static int64_t sig_class_of(const tw_constants *k, int64_t nonzero, int64_t positions) {
    int64_t rate = 64 * (2 * nonzero + 1), cls = 1;
    for (int t = 0; t < NUM_SIG_THRESHOLDS; t++) cls += rate >= k->sig_thresholds[t] * (2 * positions + 2);
    return cls;
}

static void channel_classes(levels_state *s) {
    const tw_constants *k = s->k;
    for (int64_t ch = 0; ch < s->channels; ch++) {
        s->sig_class[ch] = s->positions ? sig_class_of(k, s->nonzero[ch], s->positions) : 0;
        int64_t level = 0;
        if (s->nonzero[ch]) {
            int64_t rate = 8 * (2 * s->above_one[ch] + 1);
            level = 1;
            for (int t = 0; t < NUM_LEVEL_THRESHOLDS; t++)
                level += rate >= k->level_thresholds[t] * (2 * s->nonzero[ch] + 2);
        }
        s->level_class[ch] = level;
        s->sign_class[ch] = 2 * (s->negative[ch] > 0) + (s->positive[ch] > 0);
    }
}

/* sq.py's _sig_zero_floor: a lower bound of sig = 0's quantile range in every SIG context the
 * remaining waves can select while their levels are 0 (classes up to the highest now, which only
 * fall as positions accrue; before the first wave, up to that of Z = 0 after its one position). */
static double sig_zero_floor(const levels_state *s) {
    int64_t lowest = 1, highest = 1;
    if (s->positions == 0) {
        lowest = 0;
        highest = sig_class_of(s->k, 0, 1);
    }
    for (int64_t ch = 0; ch < s->channels && s->positions; ch++)
        if (s->sig_class[ch] > highest) highest = s->sig_class[ch];
    double least = INFINITY;
    for (int64_t row = lowest * SIG_LOCAL; row < (highest + 1) * SIG_LOCAL; row++) {
        int64_t total = min64(s->sig[row][0] + s->sig[row][1], s->k->rescale_limit / 2);
        double p_one = (double)(2 * s->sig[row][1] + 1) / (double)(2 * total + 2);
        if (1.0 - p_one < least) least = 1.0 - p_one;
    }
    return least * (double)ONE - 2;
}

/* The capped magnitudes of the left, upper, upper-left and upper-right neighbours of the
 * element at padded index `at`. */
static inline void neighbours(const levels_state *s, int64_t at, int64_t *left, int64_t *upper,
                              int64_t *upper_left, int64_t *upper_right) {
    int64_t C = s->channels, row = (s->width + 2) * C;
    *left = s->mag[at - C];
    *upper = s->mag[at - row];
    *upper_left = s->mag[at - row - C];
    *upper_right = s->mag[at - row + C];
}

/* One chunk of a wave: elements [start, end) of the wave's position-major, channel-minor list. */
static int code_chunk(coder *c, levels_state *s, const int64_t *hs, int64_t start, int64_t end,
                      int64_t k_wave, int32_t *levels) {
    const tw_constants *k = s->k;
    int64_t C = s->channels, W2 = s->width + 2;
    int64_t n = end - start;
    int64_t p = start / C, ch = start % C;          /* the element's position and channel */
    for (int64_t i = 0; i < n; i++) {
        int64_t h = hs[p], w = k_wave - 2 * h;
        int64_t at = ((h + 1) * W2 + w + 1) * C + ch;
        s->at[i] = at;
        s->channel[i] = (int32_t)ch;
        s->element_index[i] = (h * s->width + w) * C + ch;
        s->known[i] = c->encoding ? levels[s->element_index[i]] : 0;
        int64_t a, b, cc, d;
        neighbours(s, at, &a, &b, &cc, &d);
        s->ctx_sig[i] = (int32_t)(s->sig_class[ch] * SIG_LOCAL + k->sig_local_class[
            2 * min64(a, 2) + 2 * min64(b, 2) + min64(cc, 2) + min64(d, 2)]);
        if (++ch == C) { ch = 0; p++; }
    }
    /* sig, gt1, gt2: each pass under its table's counts as they stand before it */
    int8_t *decision = s->decision;
    int32_t *ctx = s->pass_ctx;
    for (int64_t i = 0; i < n; i++) decision[i] = s->known[i] != 0;
    binary_pass(c, s->sig, NUM_SIG, s->ctx_sig, decision, n, k->rescale_limit);
    int64_t n1 = 0;
    for (int64_t i = 0; i < n; i++) {
        s->chunk_mag[i] = decision[i];
        if (decision[i]) s->list1[n1++] = (int32_t)i;
    }
    for (int64_t j = 0; j < n1; j++) {       /* the other contexts, for the nonzero elements only */
        int64_t i = s->list1[j], a, b, cc, d, ch = s->channel[i];
        neighbours(s, s->at[i], &a, &b, &cc, &d);
        s->ctx_level[i] = (int32_t)(s->level_class[ch] * LEVEL_LOCAL + k->level_local_class[
            2 * min64(a, 3) + 2 * min64(b, 3) + min64(cc, 3) + min64(d, 3)]);
        s->ctx_order[i] = s->order_of[(2 * a + 2 * b + cc + d) / 6];
        int64_t W2C = (s->width + 2) * C;
        s->ctx_sign[i] = (int32_t)(4 * (s->sign[s->at[i] - C] + s->sign[s->at[i] - W2C] + 2) + s->sign_class[ch]);
        ctx[j] = s->ctx_level[i];
        decision[j] = llabs(s->known[i]) > 1;
    }
    binary_pass(c, s->gt1, NUM_LEVEL, ctx, decision, n1, k->rescale_limit);
    int64_t n2 = 0;
    for (int64_t j = 0; j < n1; j++)
        if (decision[j]) { s->chunk_mag[s->list1[j]] = 2; s->list2[n2++] = s->list1[j]; }
    for (int64_t j = 0; j < n2; j++) {
        int64_t i = s->list2[j];
        ctx[j] = s->ctx_level[i];
        decision[j] = llabs(s->known[i]) > 2;
    }
    binary_pass(c, s->gt2, NUM_LEVEL, ctx, decision, n2, k->rescale_limit);
    int64_t n3 = 0;
    for (int64_t j = 0; j < n2; j++)
        if (decision[j]) s->list3[n3++] = s->list2[j];
    /* remainder |q| − 3: Exp-Golomb, the prefix adaptive per order, then the suffix in bypass
     * pieces (every element's first piece, then every second piece, ...) */
    if (n3) {
        uint64_t starts[EG_ORDERS][EG_SYMBOLS + 1];
        int64_t totals[EG_ORDERS];
        int ready[EG_ORDERS] = {0};
        int64_t *prefix = s->eg_value;
        for (int64_t j = 0; j < n3; j++) {
            int64_t i = s->list3[j], order = s->ctx_order[i];
            if (!ready[order]) { totals[order] = categorical_starts(s->eg[order], EG_SYMBOLS, starts[order]); ready[order] = 1; }
            int symbol = 0;
            if (c->encoding) {
                uint64_t v = (uint64_t)(llabs(s->known[i]) - 3);
                symbol = bit_length((v >> order) + 1) - 1;
                s->suffix[j] = ((((v >> order) + 1) - ((uint64_t)1 << symbol)) << order) | (v & (((uint64_t)1 << order) - 1));
            }
            prefix[j] = code_categorical(c, starts[order], EG_SYMBOLS, symbol);
        }
        int64_t coded[EG_ORDERS][EG_SYMBOLS] = {{0}};
        for (int64_t j = 0; j < n3; j++) coded[s->ctx_order[s->list3[j]]][prefix[j]]++;
        for (int r = 0; r < EG_ORDERS; r++)
            for (int i = 0; ready[r] && i < EG_SYMBOLS; i++) {
                if (c->encoding && coded[r][i])
                    c->ideal_bits -= (double)coded[r][i] * log2((double)s->eg[r][i] / (double)totals[r]);
                s->eg[r][i] += 2 * coded[r][i];
            }
        rescale(&s->eg[0][0], EG_ORDERS, EG_SYMBOLS, k->rescale_limit);
        int64_t active = 0;
        for (int64_t j = 0; j < n3; j++) {
            s->remaining[j] = (int8_t)(prefix[j] + s->ctx_order[s->list3[j]]);
            active += s->remaining[j] > 0;
            if (!c->encoding) s->suffix[j] = 0;
        }
        while (active) {
            active = 0;
            for (int64_t j = 0; j < n3; j++) {
                if (s->remaining[j] <= 0) continue;
                int piece = (s->remaining[j] - 1) % (int)k->bypass_chunk_bits + 1;
                s->remaining[j] -= (int8_t)piece;
                uint64_t bits = (s->suffix[j] >> s->remaining[j]) & (((uint64_t)1 << piece) - 1);
                bits = code_bypass(c, bits, piece);
                if (!c->encoding) s->suffix[j] = (s->suffix[j] << piece) | bits;
                active += s->remaining[j] > 0;
            }
        }
        for (int64_t j = 0; j < n3; j++) {
            int64_t i = s->list3[j], order = s->ctx_order[i];
            uint64_t high = (s->suffix[j] >> order) + ((uint64_t)1 << prefix[j]) - 1;
            uint64_t v = (high << order) | (s->suffix[j] & (((uint64_t)1 << order) - 1));
            if (v > (uint64_t)(k->max_abs_level - 3)) return TW_LEVEL_OVERFLOW;
            s->chunk_mag[i] = 3 + (int64_t)v;
        }
    }
    /* sign */
    for (int64_t j = 0; j < n1; j++) {
        int64_t i = s->list1[j];
        ctx[j] = s->ctx_sign[i];
        decision[j] = s->known[i] < 0;
    }
    binary_pass(c, s->sgn, NUM_SIGN, ctx, decision, n1, k->rescale_limit);
    for (int64_t j = 0; j < n1; j++)
        s->chunk_mag[s->list1[j]] *= 1 - 2 * decision[j];
    /* the chunk's levels: output, neighbour maps (read only by later waves) and statistics */
    for (int64_t i = 0; i < n; i++) {
        int64_t q = s->chunk_mag[i], at = s->at[i];
        ch = s->channel[i];
        if (!c->encoding) levels[s->element_index[i]] = (int32_t)q;
        int64_t magnitude = llabs(q);
        s->mag[at] = (int16_t)(magnitude < k->mag_cap ? magnitude : k->mag_cap);
        s->sign[at] = (int8_t)((q > 0) - (q < 0));
        s->nonzero[ch] += q != 0;
        s->above_one[ch] += magnitude > 1;
        s->positive[ch] += q > 0;
        s->negative[ch] += q < 0;
    }
    return c->failed ? TW_NO_MEMORY : TW_OK;
}

static void *zeroed(size_t count, size_t size, int *failed) {
    void *p = calloc(count ? count : 1, size);
    if (!p) *failed = 1;
    return p;
}

static void release(levels_state *s) {
    free(s->mag); free(s->sign); free(s->nonzero); free(s->above_one); free(s->positive); free(s->negative);
    free(s->sig_class); free(s->level_class); free(s->sign_class);
    free(s->ctx_sig); free(s->ctx_level); free(s->ctx_order); free(s->ctx_sign); free(s->pass_ctx); free(s->channel); free(s->element_index); free(s->known); free(s->at);
    free(s->chunk_mag); free(s->eg_value); free(s->list1); free(s->list2); free(s->list3);
    free(s->order_of); free(s->decision); free(s->remaining); free(s->suffix);
}

/* x div f and x mod f for the encoder's renormalised state (x < f·2^40, 1 ≤ f < 2^24), the
 * division kept off the state's dependency chain: with m = (2^64 − 1) div f (which depends on f
 * only), the high half of x·m undershoots x/f by less than 1 + 2^-24 and never overshoots, so
 * the remainder's range corrects it in at most two steps. */
static inline uint64_t divide(uint64_t x, uint64_t f, uint64_t *remainder) {
#if defined(__SIZEOF_INT128__)
    uint64_t q = (uint64_t)(((unsigned __int128)x * (UINT64_MAX / f)) >> 64);
    uint64_t r = x - q * f, step;
    step = r >= f; q += step; r -= f & (0 - step);
    step = r >= f; q += step; r -= f & (0 - step);
#else
    uint64_t q = x / f, r = x % f;
#endif
    *remainder = r;
    return q;
}

/* The payload words of the symbol words ANS-encoded in reverse from an empty coder; their
 * count, or −1 without memory. */
static int64_t ans_encode_reverse(const uint32_t *symbols, int64_t num_symbols, uint32_t **words) {
    uint32_t *out = malloc(((size_t)num_symbols + 2) * sizeof *out);   /* ≤ one word per symbol, x's two */
    if (!out) return -1;
    int64_t count = 0;
    uint64_t x = 0;
    for (int64_t i = num_symbols - 1; i >= 0; i--) {
        uint32_t word = symbols[i];
        uint64_t start, f;
        switch (SYMBOL_TAG(word)) {
        case SYMBOL_BINARY: {
            uint64_t s1 = word & SYMBOL_FIELD, mask = 0 - (uint64_t)(word >> 24 & 1);
            start = s1 & mask;
            f = s1 + ((ONE - 2 * s1) & mask);
            break;
        }
        case SYMBOL_BYPASS: {
            int bits = (int)(word >> 16 & 31);
            start = (uint64_t)(word & 0xffffu) << (PROB_BITS - bits);
            f = ONE >> bits;
            break;
        }
        default:                /* SYMBOL_CATEGORICAL_SIZE, after its start */
            f = word & SYMBOL_FIELD;
            start = symbols[--i] & SYMBOL_FIELD;
        }
        uint64_t emit = (x >> (64 - PROB_BITS)) >= f;      /* branch-free: taken about once in eight */
        out[count] = (uint32_t)x;
        count += (int64_t)emit;
        x = emit ? x >> 32 : x;
        uint64_t remainder, quotient = divide(x, f, &remainder);
        x = (quotient << PROB_BITS) + remainder + start;
    }
    if (x) out[count++] = (uint32_t)x;
    if (x >> 32) out[count++] = (uint32_t)(x >> 32);
    *words = out;
    return count;
}

/* The levels of one C×H×W tensor, held position-major (levels[(h·W + w)·C + c], so that a
 * wave's elements lie together; |q| ≤ 2^31 − 1 fits int32), coded (encoding: `levels` holds them) or decoded (into the
 * zeroed `levels`), chunks starting at size `chunk`; `scratch` elements hold the largest chunk.
 * The decoder starts from the payload's
 * canonical words (words[0 .. num_words)) and reports x and the words left; the encoder writes
 * the words of the levels' symbols (the last of the payload, so ANS-encoded first). */
int tw_code_levels(const tw_constants *k, int encoding, int64_t channels, int64_t height, int64_t width,
                   int64_t chunk, int64_t chunk_limit, int64_t scratch, int32_t *levels, const uint32_t *words,
                   int64_t num_words, tw_result *result) {
    if (k->num_sig_contexts != NUM_SIG || k->num_level_contexts != NUM_LEVEL || k->num_sign_contexts != NUM_SIGN
        || k->eg_max_order != EG_ORDERS - 1 || k->num_eg_symbols != EG_SYMBOLS || k->bypass_chunk_bits > PROB_BITS
        || k->mag_cap > INT16_MAX || k->rescale_limit > (1 << 20))
        return TW_BAD_ARGUMENTS;
    memset(result, 0, sizeof *result);
    coder c = {0};
    c.encoding = encoding;
    if (!encoding) {
        if (num_words == 1) { c.x = words[0]; }
        else if (num_words >= 2) { c.x = ((uint64_t)words[num_words - 1] << 32) | words[num_words - 2]; c.bulk_len = num_words - 2; }
        c.bulk = words;
    }
    levels_state s = {0};
    s.k = k;
    s.channels = channels; s.height = height; s.width = width;
    int failed = 0;
    size_t plane = (size_t)(height + 1) * (size_t)(width + 2);
    s.mag = zeroed((size_t)channels * plane, sizeof *s.mag, &failed);
    s.sign = zeroed((size_t)channels * plane, sizeof *s.sign, &failed);
    s.nonzero = zeroed((size_t)channels, sizeof(int64_t), &failed);
    s.above_one = zeroed((size_t)channels, sizeof(int64_t), &failed);
    s.positive = zeroed((size_t)channels, sizeof(int64_t), &failed);
    s.negative = zeroed((size_t)channels, sizeof(int64_t), &failed);
    s.sig_class = zeroed((size_t)channels, sizeof(int64_t), &failed);
    s.level_class = zeroed((size_t)channels, sizeof(int64_t), &failed);
    s.sign_class = zeroed((size_t)channels, sizeof(int64_t), &failed);
    size_t limit = (size_t)scratch;
    s.ctx_sig = zeroed(limit, sizeof(int32_t), &failed);
    s.ctx_level = zeroed(limit, sizeof(int32_t), &failed);
    s.ctx_order = zeroed(limit, sizeof(int32_t), &failed);
    s.ctx_sign = zeroed(limit, sizeof(int32_t), &failed);
    s.channel = zeroed(limit, sizeof(int32_t), &failed);
    s.pass_ctx = zeroed(limit, sizeof(int32_t), &failed);
    s.element_index = zeroed(limit, sizeof(int64_t), &failed);
    s.known = zeroed(limit, sizeof(int64_t), &failed);
    s.at = zeroed(limit, sizeof(int64_t), &failed);
    s.chunk_mag = zeroed(limit, sizeof(int64_t), &failed);
    s.eg_value = zeroed(limit, sizeof(int64_t), &failed);
    s.list1 = zeroed(limit, sizeof(int32_t), &failed);
    s.list2 = zeroed(limit, sizeof(int32_t), &failed);
    s.list3 = zeroed(limit, sizeof(int32_t), &failed);
    s.order_of = zeroed((size_t)k->mag_cap + 1, sizeof(uint8_t), &failed);
    s.decision = zeroed(limit, sizeof(int8_t), &failed);
    s.remaining = zeroed(limit, sizeof(int8_t), &failed);
    s.suffix = zeroed(limit, sizeof(uint64_t), &failed);
    int64_t *hs = zeroed((size_t)height, sizeof(int64_t), &failed);
    if (failed) { release(&s); free(hs); return TW_NO_MEMORY; }
    for (int r = 0; r < NUM_SIG; r++) {
        s.sig[r][0] = k->sig_initial_counts[r / SIG_LOCAL][0];
        s.sig[r][1] = k->sig_initial_counts[r / SIG_LOCAL][1];
    }
    for (int r = 0; r < EG_ORDERS; r++) for (int i = 0; i < EG_SYMBOLS; i++) s.eg[r][i] = 1;
    for (int64_t v = 0; v <= k->mag_cap; v++) {
        int order = bit_length((uint64_t)v) - 1;
        s.order_of[v] = (uint8_t)(order < 0 ? 0 : (order > k->eg_max_order ? k->eg_max_order : order));
    }

    int status = TW_OK;
    for (int64_t wave = 0; wave < 2 * (height - 1) + width && status == TW_OK; wave++) {
        int64_t first = wave - width + 2 > 0 ? (wave - width + 2) / 2 : 0;
        int64_t last = wave / 2 < height - 1 ? wave / 2 : height - 1;
        if (first > last) continue;                 /* an empty wave codes nothing */
        channel_classes(&s);
        if (!encoding && c.bulk_len == 0 && c.x < WORD_LIMIT) {     /* sq.py's _rest_is_zero */
            if (c.x == 0) break;
            if (c.x < ONE && (double)c.x < sig_zero_floor(&s)) { status = TW_DATA_LEFT_OVER; break; }
        }
        int64_t positions = last - first + 1;
        for (int64_t p = 0; p < positions; p++) hs[p] = first + p;
        int64_t elements = positions * channels;
        for (int64_t start = 0; start < elements && status == TW_OK;) {
            int64_t end = start + chunk < elements ? start + chunk : elements;
            if (end - start > (int64_t)limit) { status = TW_BAD_ARGUMENTS; break; }   /* never: scratch ≥ a wave */
            status = code_chunk(&c, &s, hs, start, end, wave, levels);
            start = end;
            chunk = 2 * chunk < chunk_limit ? 2 * chunk : chunk_limit;
        }
        s.positions += positions;
    }
    release(&s);
    free(hs);
    result->chunk = chunk;
    if (status != TW_OK) { free(c.symbols); return status; }
    if (!encoding) {
        result->state = c.x;
        result->bulk_words = c.bulk_len;
        return TW_OK;
    }
    uint32_t *out = NULL;
    int64_t count = ans_encode_reverse(c.symbols, c.num_symbols, &out);
    free(c.symbols);
    if (count < 0) return TW_NO_MEMORY;
    result->words = out;
    result->num_words = count;
    result->ideal_bits = c.ideal_bits;
    return TW_OK;
}

void tw_free(uint32_t *words) { free(words); }

#ifndef TW_SOURCE_DIGEST
#define TW_SOURCE_DIGEST "unknown"
#endif

/* The first 16 hex digits of this file's SHA-256, as setup.py passed them at build time. */
const char *tw_source_digest(void) { return TW_SOURCE_DIGEST; }
