# cmake -P script behind the ctest test `consumer_find_package`:
#   1. cmake --install <PRISM_BINARY_DIR> --prefix <WORK_DIR>/prefix
#   2. configure + build tests/consumer with CMAKE_PREFIX_PATH=<WORK_DIR>/prefix
#   3. run the consumer; it must exit 0.
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
set(build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${prefix}" "${build}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(step name)
  message(STATUS "consumer: ${name}: ${ARGN}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer: step '${name}' failed (${rc})")
  endif()
endfunction()

step(install "${CMAKE_COMMAND}" --install "${PRISM_BINARY_DIR}" --prefix "${prefix}" --config "${CONFIG}")

set(configure_args -S "${CONSUMER_SOURCE_DIR}" -B "${build}"
  "-DCMAKE_PREFIX_PATH=${prefix}" "-DCMAKE_BUILD_TYPE=${CONFIG}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(GENERATOR)
  list(APPEND configure_args -G "${GENERATOR}")
endif()
if(CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(CXX_COMPILER_LAUNCHER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER_LAUNCHER=${CXX_COMPILER_LAUNCHER}")
endif()
step(configure "${CMAKE_COMMAND}" ${configure_args})
step(build "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")

# Single-config generators put the program in the build root, multi-config ones in <build>/<CONFIG>.
set(exe "${build}/consumer")
if(NOT EXISTS "${exe}" AND EXISTS "${build}/${CONFIG}/consumer")
  set(exe "${build}/${CONFIG}/consumer")
endif()
step(run "${exe}")
message(STATUS "consumer: passed")
