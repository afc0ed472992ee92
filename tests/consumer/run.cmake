# cmake -P script behind the ctest test `consumer_find_package`:
#   1. cmake --install <PRISM_BINARY_DIR> --prefix <WORK_DIR>/prefix
#   2. the CPU-only consumer (tests/consumer, CONSUMER_GPU=OFF): configured with the CUDA toolkit
#      hidden from CMake (no CUDA_HOME, no nvcc on PATH, find_package(CUDAToolkit) disabled),
#      built, checked to load no CUDA library, run;
#   3. the GPU consumer (CONSUMER_GPU=ON, find_package(Prism COMPONENTS gpu)): configured as a
#      user would, built, run.
# Each program must exit 0.
# Inputs (-D): PRISM_BINARY_DIR, CONSUMER_SOURCE_DIR, WORK_DIR, CONFIG, GENERATOR, CXX_COMPILER,
#              CXX_COMPILER_LAUNCHER (optional).
cmake_minimum_required(VERSION 3.22)

foreach(var IN ITEMS PRISM_BINARY_DIR CONSUMER_SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

set(prefix "${WORK_DIR}/prefix")
file(REMOVE_RECURSE "${prefix}" "${WORK_DIR}/build-cpu" "${WORK_DIR}/build-gpu")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(step name)
  message(STATUS "consumer: ${name}: ${ARGN}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer: step '${name}' failed (${rc})")
  endif()
endfunction()

step(install "${CMAKE_COMMAND}" --install "${PRISM_BINARY_DIR}" --prefix "${prefix}" --config "${CONFIG}")

set(common_args "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_BUILD_TYPE=${CONFIG}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(GENERATOR)
  list(APPEND common_args -G "${GENERATOR}")
endif()
if(CXX_COMPILER)
  list(APPEND common_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(CXX_COMPILER_LAUNCHER)
  list(APPEND common_args "-DCMAKE_CXX_COMPILER_LAUNCHER=${CXX_COMPILER_LAUNCHER}")
endif()

# Single-config generators put the program in the build root, multi-config ones in <build>/<CONFIG>.
function(program_path build out)
  set(exe "${build}/consumer")
  if(NOT EXISTS "${exe}" AND EXISTS "${build}/${CONFIG}/consumer")
    set(exe "${build}/${CONFIG}/consumer")
  endif()
  set(${out} "${exe}" PARENT_SCOPE)
endfunction()

# --- the CPU-only program, with no CUDA toolkit in sight ---------------------------------------------
set(path_without_cuda "")
string(REPLACE ":" ";" path_entries "$ENV{PATH}")
foreach(entry IN LISTS path_entries)
  if(NOT entry MATCHES "[Cc][Uu][Dd][Aa]")
    list(APPEND path_without_cuda "${entry}")
  endif()
endforeach()
string(REPLACE ";" ":" path_without_cuda "${path_without_cuda}")
set(build "${WORK_DIR}/build-cpu")
step(configure-cpu "${CMAKE_COMMAND}" -E env --unset=CUDA_HOME --unset=CUDA_PATH
  --unset=CUDAToolkit_ROOT --unset=CUDACXX "PATH=${path_without_cuda}"
  "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${build}" ${common_args}
  -DCONSUMER_GPU=OFF -DCMAKE_DISABLE_FIND_PACKAGE_CUDAToolkit=ON)
step(build-cpu "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")
program_path("${build}" exe)
find_program(LDD ldd)
if(LDD)
  execute_process(COMMAND "${LDD}" "${exe}" OUTPUT_VARIABLE libs RESULT_VARIABLE rc)
  if(rc EQUAL 0 AND libs MATCHES "[Cc][Uu][Dd][Aa]|cublas|nccl")
    message(FATAL_ERROR "consumer: the CPU-only program loads a CUDA library:\n${libs}")
  endif()
  message(STATUS "consumer: the CPU-only program loads no CUDA library")
endif()
step(run-cpu "${exe}")

# --- the GPU program ---------------------------------------------------------------------------------
set(build "${WORK_DIR}/build-gpu")
step(configure-gpu "${CMAKE_COMMAND}" -S "${CONSUMER_SOURCE_DIR}" -B "${build}" ${common_args}
  -DCONSUMER_GPU=ON)
step(build-gpu "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")
program_path("${build}" exe)
step(run-gpu "${exe}")
message(STATUS "consumer: passed")
