# prism_add_programs(<prefix> [GPU <name> ...] [CLUSTER <name> ...] [DASHBOARD <name> ...]
#                    [OPTIONAL <imported-target> <DEFINE> ...])
#
# Builds every <name>.cc in the calling folder as its own program <name> (target
# <prefix>_<name>), linking Prism::prism; the programs named after GPU (which include
# <prism/gpu.h>) link Prism::gpu as well, those named after CLUSTER and DASHBOARD the cluster
# and dashboard components when they were built. Each OPTIONAL pair links the imported target when it
# was found and defines the macro (e.g. PRISM_HAVE_EIGEN3=1) so the program can tell.
function(prism_add_programs prefix)
  cmake_parse_arguments(ARG "" "" "GPU;CLUSTER;DASHBOARD;OPTIONAL" ${ARGN})
  file(GLOB sources CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/*.cc")
  foreach(src IN LISTS sources)
    get_filename_component(name "${src}" NAME_WE)
    set(target ${prefix}_${name})
    add_executable(${target} "${src}")
    set_target_properties(${target} PROPERTIES OUTPUT_NAME "${name}")
    target_include_directories(${target} PRIVATE "${CMAKE_CURRENT_SOURCE_DIR}")
    target_link_libraries(${target} PRIVATE Prism::prism prism_warnings)
    if(name IN_LIST ARG_GPU)
      target_link_libraries(${target} PRIVATE Prism::gpu)
    endif()
    # Programs that can run as a cluster job (mpirun, or PRISM_LISTEN / PRISM_ADDRESS) when the
    # cluster module is built; embedded otherwise.
    if(name IN_LIST ARG_CLUSTER AND TARGET prism_cluster)
      target_link_libraries(${target} PRIVATE Prism::cluster)
    endif()
    # Programs that serve a dashboard when asked (PRISM_DASHBOARD=host:port).
    if(name IN_LIST ARG_DASHBOARD AND TARGET prism_dashboard)
      target_link_libraries(${target} PRIVATE Prism::dashboard)
    endif()
    set(deps ${ARG_OPTIONAL})
    while(deps)
      list(POP_FRONT deps dep define)
      if(TARGET ${dep})
        target_link_libraries(${target} PRIVATE ${dep})
        target_compile_definitions(${target} PRIVATE ${define}=1)
      endif()
    endwhile()
  endforeach()
endfunction()
