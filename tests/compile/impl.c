/* impl.c - the implementation alone, for the two-translation-unit builds of the compile matrix
   (smoke.c built with -DSMOKE_EXTERN_IMPL uses it) and for the static analysers. */
#define EVLOOP_IMPLEMENTATION
#include "evloop.h"
