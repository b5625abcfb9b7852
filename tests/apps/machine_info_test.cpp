// Machine description: the /proc parsers on fixed texts and the live description.
#include "apps/fgnet/machine_info.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace fgnet::cli {
namespace {

using ::testing::ElementsAre;

constexpr const char* kX86CpuInfo =
    "processor\t: 0\n"
    "vendor_id\t: AuthenticAMD\n"
    "model name\t: AMD EPYC 9R14 96-Core Processor\n"
    "flags\t\t: fpu sse2 sse4_2 avx avx2 fma avx512f avx512bw avx512vl avx512_bf16 "
    "avx512_vnni\n"
    "\n"
    "processor\t: 1\n"
    "model name\t: Some Other Name\n"
    "flags\t\t: fpu\n";

constexpr const char* kArmCpuInfo =
    "processor\t: 0\n"
    "BogoMIPS\t: 243.75\n"
    "Features\t: fp asimd evtstrm aes sha1 asimdhp asimddp sve bf16 i8mm\n"
    "CPU implementer\t: 0x41\n"
    "\n"
    "Hardware\t: Example Board\n";

TEST(MachineInfoTest, ParsesX86CpuInfo) {
  const CpuInfo cpu = ParseCpuInfo(kX86CpuInfo);
  EXPECT_EQ(cpu.model, "AMD EPYC 9R14 96-Core Processor");
  ASSERT_EQ(cpu.flags.size(), 11u);
  EXPECT_EQ(cpu.flags.front(), "fpu");
  EXPECT_THAT(SelectSimdFeatures(cpu.flags),
              ElementsAre("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                          "avx512_vnni", "avx512_bf16"));
}

TEST(MachineInfoTest, ParsesArmCpuInfo) {
  const CpuInfo cpu = ParseCpuInfo(kArmCpuInfo);
  EXPECT_EQ(cpu.model, "Example Board");
  EXPECT_THAT(SelectSimdFeatures(cpu.flags),
              ElementsAre("asimd", "asimdhp", "asimddp", "bf16", "i8mm", "sve"));
}

TEST(MachineInfoTest, EmptyCpuInfo) {
  const CpuInfo cpu = ParseCpuInfo("");
  EXPECT_EQ(cpu.model, "");
  EXPECT_TRUE(cpu.flags.empty());
  EXPECT_TRUE(SelectSimdFeatures(cpu.flags).empty());
}

TEST(MachineInfoTest, ParsesMemTotal) {
  EXPECT_EQ(ParseMemTotal("MemTotal:       24684084 kB\nMemFree:  1 kB\n"),
            std::uint64_t{24684084} * 1024);
  EXPECT_EQ(ParseMemTotal("MemFree:  1 kB\nMemTotal: 2048 kB"), std::uint64_t{2048} * 1024);
  EXPECT_EQ(ParseMemTotal("MemFree:  1 kB\n"), std::nullopt);
  EXPECT_EQ(ParseMemTotal("MemTotal: lots\n"), std::nullopt);
  EXPECT_EQ(ParseMemTotal("MemTotal: 5 MB\n"), std::nullopt);
}

TEST(MachineInfoTest, ParsesOsRelease) {
  EXPECT_EQ(ParseOsPrettyName("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 "
                              "(bookworm)\"\nID=debian\n"),
            "Debian GNU/Linux 12 (bookworm)");
  EXPECT_EQ(ParseOsPrettyName("PRETTY_NAME=Alpine\n"), "Alpine");
  EXPECT_EQ(ParseOsPrettyName("PRETTY_NAME='Quoted'\n"), "Quoted");
  EXPECT_EQ(ParseOsPrettyName("NAME=x\n"), "");
}

TEST(MachineInfoTest, DescribesThisMachine) {
  const MachineInfo m = DescribeMachine();
  EXPECT_GE(m.logical_cores, 1);
  EXPECT_GE(m.available_cores, 1);
  EXPECT_GT(m.memory_bytes, std::uint64_t{0});
  EXPECT_FALSE(m.cpu_model.empty());
  EXPECT_NE(m.simd_dispatch, "unknown");
  EXPECT_TRUE(m.os.starts_with("Linux ")) << m.os;
}

}  // namespace
}  // namespace fgnet::cli
