/*
 * mallocTrim(): glibc's malloc_trim(0) for the sidecar's idle-time collection
 * (sidecar/proxy/malloc-trim.ts). Under load the sidecar's native allocations (HTTP/2 frames,
 * buffers, compiler zones) spread through malloc's heaps; once freed, glibc keeps the pages
 * unless they sit at a heap's top, so the RSS stays ~14 MB above idle after a load has
 * passed. malloc_trim(0) gives every wholly free page back to the kernel.
 *
 * A Node-API module (ABI-stable across Node versions) that declares the three Node-API calls
 * it uses instead of including node_api.h: it builds with a C compiler alone, no headers or
 * node-gyp (scripts/build-sidecar.mjs: cc -shared -fPIC). The calls resolve against the node
 * binary when the module is loaded. Only where malloc_trim exists (glibc); elsewhere the build
 * or the load fails and the sidecar runs without it.
 */
#include <malloc.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct napi_env__ *napi_env;
typedef struct napi_value__ *napi_value;
typedef struct napi_callback_info__ *napi_callback_info;
typedef napi_value (*napi_callback)(napi_env env, napi_callback_info info);

extern int napi_create_function(napi_env env, const char *name, size_t length, napi_callback cb, void *data,
                                napi_value *result);
extern int napi_set_named_property(napi_env env, napi_value object, const char *name, napi_value value);
extern int napi_get_boolean(napi_env env, bool value, napi_value *result);

/* Returns true when memory was given back to the kernel. */
static napi_value malloc_trim_js(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result = NULL;
  napi_get_boolean(env, malloc_trim(0) == 1, &result);
  return result;
}

napi_value napi_register_module_v1(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "mallocTrim", 10, malloc_trim_js, NULL, &fn) == 0)
    napi_set_named_property(env, exports, "mallocTrim", fn);
  return exports;
}
