# Writes OUT, a header defining FGNET_BUILD_COMMIT as `git rev-parse HEAD` of SOURCE_DIR ("unknown"
# where GIT is not given or the tree is not a checkout), only when its text changes. Run by every
# build (src/apps/fgnet/CMakeLists.txt), so that the commit is that of the sources the build
# compiled, and build_info.cpp is recompiled only when it moves.
set(head "unknown")
if(GIT)
  execute_process(
    COMMAND ${GIT} rev-parse HEAD
    WORKING_DIRECTORY ${SOURCE_DIR}
    OUTPUT_VARIABLE git_head
    RESULT_VARIABLE git_result
    OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_QUIET)
  if(git_result EQUAL 0 AND git_head MATCHES "^[0-9a-f]+$")
    set(head "${git_head}")
  endif()
endif()
set(text "// Written by cmake/WriteBuildCommit.cmake at build time.\n#define FGNET_BUILD_COMMIT \"${head}\"\n")
set(old "")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
endif()
if(NOT old STREQUAL text)
  file(WRITE "${OUT}" "${text}")
endif()
