# The layers of harness/, bottom first (README.md, "Layers"): a folder may include its own headers and
# those of folders below it, never one above it, so that no part reaches one that reaches it back.
# Run by ctest (layers_one_way): cmake -DSRC=<source root> -P cmake/check_layers.cmake
# Includes that name no folder of harness/ (<ATen/...>, "kernels/...", generated headers) are not checked.
set(LAYERS common device results launch profile collectives ddp train suite predict preflight gate orchestrate cli)

if(NOT SRC)
  message(FATAL_ERROR "check_layers: pass -DSRC=<source root>")
endif()

file(GLOB folders LIST_DIRECTORIES true RELATIVE ${SRC}/harness ${SRC}/harness/*)
set(problems "")
foreach(folder IN LISTS folders)
  if(NOT IS_DIRECTORY ${SRC}/harness/${folder} OR folder STREQUAL "hf")  # hf/: the Python adapters
    continue()
  endif()
  list(FIND LAYERS ${folder} own)
  if(own EQUAL -1)
    string(APPEND problems "harness/${folder}/ is not in the layer order: add it to LAYERS in cmake/check_layers.cmake and to README.md\n")
    continue()
  endif()
  file(GLOB_RECURSE sources RELATIVE ${SRC} ${SRC}/harness/${folder}/*.h ${SRC}/harness/${folder}/*.cpp
       ${SRC}/harness/${folder}/*.h.in)
  foreach(source IN LISTS sources)
    file(STRINGS ${SRC}/${source} includes REGEX "^[ \t]*#[ \t]*include[ \t]+\"[^\"/]+/")
    foreach(line IN LISTS includes)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]+\"([^\"/]+)/.*$" "\\1" target "${line}")
      list(FIND LAYERS ${target} below)
      if(below GREATER own)
        string(APPEND problems "${source}: includes ${target}/, a layer above ${folder}/\n")
      endif()
    endforeach()
  endforeach()
endforeach()

if(problems)
  message(FATAL_ERROR "layer order broken (bottom first: ${LAYERS}):\n${problems}")
endif()
list(JOIN LAYERS " < " order)
message(STATUS "harness layers one-way: ${order}")
