# Tests for examples/: included from examples/CMakeLists.txt after the example targets exist.
#
# Each example runs at a small size (a few seconds) and checks its own result: it exits non-zero
# and prints "WRONG RESULT" / "FAILED" when the Prism result differs from the serial one or
# from the known answer. The tests check that, never the timings (the examples print those).
# Plus the unit tests of the image transforms (tests/examples/image_transforms_test.cc).
#
#   ctest -L examples --output-on-failure

if(NOT PRISM_BUILD_TESTS)
  return()
endif()

# Scratch folder for generated JPEGs (one per test, so that parallel ctest runs never share).
set(PRISM_EXAMPLES_SCRATCH "${CMAKE_CURRENT_BINARY_DIR}/test-scratch")

# prism_example_test(<test name> <example> [args...]): runs example_<example> with the args.
function(prism_example_test test_name example)
  if(NOT TARGET example_${example})
    message(STATUS "Prism: no test ${test_name} (example_${example} is not built)")
    return()
  endif()
  add_test(NAME ${test_name} COMMAND $<TARGET_FILE:example_${example}> ${ARGN})
  set_tests_properties(${test_name} PROPERTIES
    LABELS examples
    TIMEOUT 120
    # The exit code decides; these messages fail the test even if an exit code were lost.
    FAIL_REGULAR_EXPRESSION "WRONG RESULT;FAILED")
endfunction()

prism_example_test(example_quickstart       quickstart --cpus=2)
prism_example_test(example_sleep_tasks      sleep_tasks --scale=0.05 --cpus=4)
# Asserts (with a wide margin) that the trees beat the chain: sleeps, so CPU load barely matters.
prism_example_test(example_tree_add         tree_add --scale=0.1 --cpus=4)
prism_example_test(example_fibonacci        fibonacci --n=20000 --rounds=10 --cpus=2)
prism_example_test(example_monte_carlo_pi   monte_carlo_pi --samples=1000000 --cpus=2)
prism_example_test(example_matmul_tree      matmul_tree --n=200 --iterations=20 --cpus=2)
# Three variants of one task (scalar, Eigen, Thrust on a logical GPU): every result checked.
prism_example_test(example_complex_operation complex_operation --n=200000 --tasks=10 --rounds=2
  --cpus=1 --gpus=1)
prism_example_test(example_image_preprocess image_preprocess --images=4 --size=600 --cpus=2
  "--dir=${PRISM_EXAMPLES_SCRATCH}/image_preprocess")
prism_example_test(example_image_preprocess_full_decode image_preprocess --images=3 --size=500
  --full-decode --cpus=2 "--dir=${PRISM_EXAMPLES_SCRATCH}/image_preprocess_full_decode")
# --gpu: the same workloads as GPU tasks, on CUDA devices when present, else on logical GPUs of
# the host backend; matrices must match the serial ones within 1e-9, image tensors bit for bit.
prism_example_test(example_matmul_tree_gpu  matmul_tree --n=200 --iterations=8 --cpus=2 --gpu)
prism_example_test(example_image_preprocess_gpu image_preprocess --images=5 --size=600 --batch=2
  --cpus=2 --gpu "--dir=${PRISM_EXAMPLES_SCRATCH}/image_preprocess_gpu")
# Two logical GPUs (batches may land on either) and whole pictures in the batch slots.
prism_example_test(example_image_preprocess_gpu_full_decode image_preprocess --images=3 --size=500
  --full-decode --batch=2 --cpus=2 --gpu --gpus=2
  "--dir=${PRISM_EXAMPLES_SCRATCH}/image_preprocess_gpu_full_decode")
prism_example_test(example_counter_actor    counter_actor --work=0.02 --cpus=2)
prism_example_test(example_wait_and_put     wait_and_put --scale=0.2 --put-mb=16 --readers=4 --cpus=2)
prism_example_test(example_nested_tasks     nested_tasks --steps=20000 --trials=3 --cpus=2)
# One CPU slot: outer tasks blocked in get() must lend it to their inner tasks (no deadlock).
prism_example_test(example_nested_tasks_1cpu nested_tasks --steps=20000 --trials=3 --cpus=1)
prism_example_test(example_demo             demo --n=200 --iterations=10 --images=4 --size=600
  --cpus=2 "--dir=${PRISM_EXAMPLES_SCRATCH}/demo"
  "--timeline=${PRISM_EXAMPLES_SCRATCH}/demo-timeline.json")
prism_example_test(example_demo_gpu         demo --n=200 --iterations=4 --images=3 --size=600
  --cpus=2 --gpu "--dir=${PRISM_EXAMPLES_SCRATCH}/demo_gpu" --timeline=)

# Unit tests of examples/image/ (header-only; they need libjpeg, not Prism). Built here unless
# tests/CMakeLists.txt already made a target for tests/examples.
if(TARGET JPEG::JPEG AND NOT TARGET prism_examples_tests
   AND EXISTS "${PROJECT_SOURCE_DIR}/tests/examples/image_transforms_test.cc")
  find_package(GTest)
  if(GTest_FOUND)
    include(GoogleTest)
    add_executable(prism_examples_tests
      "${PROJECT_SOURCE_DIR}/tests/examples/image_transforms_test.cc")
    target_link_libraries(prism_examples_tests PRIVATE
      GTest::gtest GTest::gtest_main JPEG::JPEG prism_warnings)
    gtest_discover_tests(prism_examples_tests
      DISCOVERY_MODE PRE_TEST
      DISCOVERY_TIMEOUT 60
      PROPERTIES TIMEOUT 60 LABELS examples)
  else()
    message(STATUS "Prism: GoogleTest not found, examples/image unit tests not built")
  endif()
endif()

# The same examples as cluster jobs: `mpirun -np 3` on loopback (rank 0 drives, ranks 1-2 serve);
# the example checks its own result as above. (Not wait_and_put: it checks that tasks read a put
# array without copies, which holds only in one process.)
find_program(PRISM_MPIRUN mpirun)
function(prism_example_cluster_test test_name example)
  if(NOT TARGET example_${example} OR NOT TARGET prism_cluster OR NOT PRISM_MPIRUN
     OR NOT PRISM_PMIX_FOUND)
    return()
  endif()
  add_test(NAME ${test_name}
    COMMAND "${PRISM_MPIRUN}" --allow-run-as-root --oversubscribe -np 3
      -x UCX_NET_DEVICES=lo -x UCX_MEM_EVENTS=no $<TARGET_FILE:example_${example}> ${ARGN})
  set_tests_properties(${test_name} PROPERTIES
    LABELS "examples;cluster"
    TIMEOUT 180
    RUN_SERIAL TRUE
    FAIL_REGULAR_EXPRESSION "WRONG RESULT;FAILED")
endfunction()
# GPU paths on a cluster of nodes of different shapes, with logical GPUs (the host backend): the
# driver has none, node1 two, node2 one, so every tensor the driver reads crosses nodes and
# tensors move between nodes' GPUs (on device channels where a GPU task reads a tensor another
# node keeps on its GPU: loopback sockets here, as NCCL would on real GPUs).
function(prism_example_gpu_cluster_test test_name example)
  if(NOT TARGET example_${example} OR NOT TARGET prism_cluster OR NOT PRISM_MPIRUN
     OR NOT PRISM_PMIX_FOUND)
    return()
  endif()
  set(exe $<TARGET_FILE:example_${example}>)
  add_test(NAME ${test_name}
    COMMAND "${PRISM_MPIRUN}" --allow-run-as-root --oversubscribe
      -x UCX_NET_DEVICES=lo -x UCX_MEM_EVENTS=no -x PRISM_DEVICE_CHANNEL=sockets
      -np 1 -x PRISM_NUM_GPUS=0 ${exe} --gpu ${ARGN}
      : -np 1 -x PRISM_NUM_GPUS=2 ${exe} --gpu ${ARGN}
      : -np 1 -x PRISM_NUM_GPUS=1 ${exe} --gpu ${ARGN})
  set_tests_properties(${test_name} PROPERTIES
    LABELS "examples;cluster"
    TIMEOUT 180
    RUN_SERIAL TRUE
    FAIL_REGULAR_EXPRESSION "WRONG RESULT;FAILED")
endfunction()
prism_example_gpu_cluster_test(example_matmul_tree_gpu_mpirun matmul_tree --n=200 --iterations=20
  --cpus=1)
prism_example_gpu_cluster_test(example_image_preprocess_gpu_mpirun image_preprocess --images=4
  --size=600 --cpus=1 "--dir=${PRISM_EXAMPLES_SCRATCH}/image_preprocess_gpu_mpirun")

prism_example_cluster_test(example_quickstart_mpirun     quickstart --cpus=1)
prism_example_cluster_test(example_fibonacci_mpirun      fibonacci --n=20000 --rounds=10 --cpus=1)
prism_example_cluster_test(example_monte_carlo_pi_mpirun monte_carlo_pi --samples=1000000 --cpus=1)
prism_example_cluster_test(example_nested_tasks_mpirun   nested_tasks --steps=20000 --trials=3 --cpus=1)
prism_example_cluster_test(example_matmul_tree_mpirun    matmul_tree --n=200 --iterations=20 --cpus=1)
prism_example_cluster_test(example_image_preprocess_mpirun image_preprocess --images=4 --size=600
  --cpus=1 "--dir=${PRISM_EXAMPLES_SCRATCH}/image_preprocess_mpirun")
prism_example_cluster_test(example_demo_mpirun           demo --n=200 --iterations=10 --images=4
  --size=600 --cpus=1 "--dir=${PRISM_EXAMPLES_SCRATCH}/demo_mpirun" --timeline=)
