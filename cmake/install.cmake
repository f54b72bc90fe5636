include(CMakePackageConfigHelpers)

install(DIRECTORY include/evnet DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS evnet_static evnet_shared EXPORT evnetTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT evnetTargets NAMESPACE evnet:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evnet)
configure_package_config_file(cmake/evnetConfig.cmake.in
  ${PROJECT_BINARY_DIR}/evnetConfig.cmake INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evnet)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/evnetConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/evnetConfig.cmake ${PROJECT_BINARY_DIR}/evnetConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/evnet)
configure_file(cmake/evnet.pc.in ${PROJECT_BINARY_DIR}/evnet.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/evnet.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
