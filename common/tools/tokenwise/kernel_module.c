/* Makes the built kernel an importable (empty) extension module, so that Python's import
 * machinery and tools that walk the package accept it; the kernel itself (kernel.c) is called
 * through ctypes (kernel.py) and uses no Python API. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernel", "The token-wise level coder (kernel.c), loaded by kernel.py with ctypes.",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&kernel_module); }
