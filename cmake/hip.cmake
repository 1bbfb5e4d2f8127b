# The HIP backend: csrc/backends/cuda/cuda.cu compiled by hipcc (with TL_HIP) into one object
# that joins torchless_core, linked against the HIP runtime. hipcc is run directly rather than
# through CMake's HIP language, which (in CMake 3.25) expects ROCm's own directory layout and
# rejects Debian's (hip-lang under /usr/lib/<triplet>/cmake). hipBLAS (2.0 or later, ROCm 6) is
# used where found; without it the prefill GEMM is our own (gemm.cuh).

find_program(TORCHLESS_HIPCC hipcc HINTS ENV ROCM_PATH /opt/rocm PATH_SUFFIXES bin)
find_library(TORCHLESS_AMDHIP64 amdhip64 HINTS ENV ROCM_PATH /opt/rocm PATH_SUFFIXES lib)
if(NOT TORCHLESS_HIPCC OR NOT TORCHLESS_AMDHIP64)
  message(FATAL_ERROR "TORCHLESS_HIP=ON needs hipcc and the HIP runtime (Debian: apt-get install hipcc; "
                      "or ROCm under /opt/rocm or $ROCM_PATH)")
endif()

find_package(hipblas CONFIG QUIET PATHS $ENV{ROCM_PATH} /opt/rocm)
set(_hip_defs -DTL_HIP)
if(hipblas_FOUND AND hipblas_VERSION VERSION_GREATER_EQUAL 2.0)
  message(STATUS "HIP backend: hipBLAS ${hipblas_VERSION} for the prefill GEMM")
  get_target_property(_hipblas_inc roc::hipblas INTERFACE_INCLUDE_DIRECTORIES)
  list(TRANSFORM _hipblas_inc PREPEND -I)
  list(APPEND _hip_defs -DTL_HAVE_HIPBLAS ${_hipblas_inc})
  target_link_libraries(torchless_core PUBLIC roc::hipblas)
else()
  message(STATUS "HIP backend: no hipBLAS 2.0 or later; the prefill GEMM is our own")
endif()

set(_hip_flags -x hip -std=c++17 -fPIC -fvisibility=hidden -Wall -Wextra
    # every HIP runtime call is [[nodiscard]]; the backend ignores the results of teardown calls
    -Wno-unused-result)
if(CMAKE_BUILD_TYPE STREQUAL "Debug")
  list(APPEND _hip_flags -O0 -g)
else()
  list(APPEND _hip_flags -O3)
endif()
if(TORCHLESS_WERROR)
  list(APPEND _hip_flags -Werror)
endif()
foreach(arch ${TORCHLESS_HIP_ARCHITECTURES})
  list(APPEND _hip_flags --offload-arch=${arch})
endforeach()

set(_hip_src ${CMAKE_CURRENT_SOURCE_DIR}/csrc/backends/cuda/cuda.cu)
set(_hip_obj ${CMAKE_CURRENT_BINARY_DIR}/torchless_hip.o)
file(GLOB _hip_deps CONFIGURE_DEPENDS csrc/backends/cuda/*.h csrc/backends/cuda/*.cuh)
list(APPEND _hip_deps csrc/backends/backend.h csrc/core/fp16.h csrc/core/status.h csrc/include/torchless.h)
add_custom_command(
  OUTPUT ${_hip_obj}
  # HIP_PLATFORM: hipcc would build for NVIDIA where it also finds nvcc
  COMMAND ${CMAKE_COMMAND} -E env HIP_PLATFORM=amd
          ${TORCHLESS_HIPCC} ${_hip_flags} ${_hip_defs}
          -I${CMAKE_CURRENT_SOURCE_DIR}/csrc -I${CMAKE_CURRENT_SOURCE_DIR}/csrc/include
          -c ${_hip_src} -o ${_hip_obj}
  DEPENDS ${_hip_src} ${_hip_deps}
  COMMENT "Building the HIP backend with hipcc (${TORCHLESS_HIP_ARCHITECTURES})"
  COMMAND_EXPAND_LISTS VERBATIM)
target_sources(torchless_core PRIVATE ${_hip_obj})
set_source_files_properties(${_hip_obj} PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)
target_compile_definitions(torchless_core PUBLIC TL_HAVE_HIP=1)
target_link_libraries(torchless_core PUBLIC ${TORCHLESS_AMDHIP64})
