# cmake -P script behind the ctest tests `compile_fail_<name>`: compiles SOURCE (syntax only) with
# the build's compiler and passes if the compiler rejects it with the message the source expects
# on its first line ("// expect: <regex>"), in at most MAX_ERRORS errors (default 1, or a
# "// max-errors: N" line): the message must name the cause, not hide in a cascade.
# Inputs (-D): CXX, SOURCE, INCLUDE_DIR, FLAGS (a ;-list, optional).
cmake_minimum_required(VERSION 3.22)

file(STRINGS "${SOURCE}" expect_lines REGEX "^// expect: ")
list(GET expect_lines 0 expect)
string(REGEX REPLACE "^// expect: " "" expect "${expect}")
set(max_errors 1)
file(STRINGS "${SOURCE}" max_lines REGEX "^// max-errors: [0-9]+")
if(max_lines)
  list(GET max_lines 0 max_line)
  string(REGEX REPLACE "^// max-errors: " "" max_errors "${max_line}")
endif()

execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only ${FLAGS} "-I${INCLUDE_DIR}" "${SOURCE}"
  RESULT_VARIABLE rc
  OUTPUT_VARIABLE out
  ERROR_VARIABLE err)
set(all "${out}${err}")
if(rc EQUAL 0)
  message(FATAL_ERROR "compile-fail: ${SOURCE} compiled, but it must be rejected with: ${expect}")
endif()
if(NOT all MATCHES "${expect}")
  message(FATAL_ERROR "compile-fail: the compiler rejected ${SOURCE}, but without '${expect}':\n${all}")
endif()
string(REGEX MATCHALL "error:" errors "${all}")
list(LENGTH errors error_count)
if(error_count GREATER max_errors)
  message(FATAL_ERROR "compile-fail: ${error_count} errors for ${SOURCE} (at most ${max_errors}: "
                      "the cause must not be buried):\n${all}")
endif()
message(STATUS "compile-fail: ${SOURCE}: rejected with '${expect}' (${error_count} error)")
