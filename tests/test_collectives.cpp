// The collectives benchmark's table: nccl-tests' size conventions and bus-bandwidth factors, and
// the data check's expectations against an independent simulation of each collective.
#include <gtest/gtest.h>

#include <cmath>

#include "collectives/collectives.h"
#include "common/error.h"

namespace {

using namespace ddpbench::collectives;

std::vector<double> evaluate(const std::vector<Stretch>& stretches, std::int64_t n) {
  std::vector<double> out(static_cast<std::size_t>(n), std::nan(""));
  for (const auto& s : stretches)
    for (std::int64_t t = 0; t < s.count; ++t) out[static_cast<std::size_t>(s.offset + t)] = s.at(t);
  return out;
}

TEST(CollectivesTable, BusFactorsAreNcclTests) {
  EXPECT_DOUBLE_EQ(find("all_reduce").bus_factor(8), 2.0 * 7 / 8);
  EXPECT_DOUBLE_EQ(find("reduce_scatter").bus_factor(8), 7.0 / 8);
  EXPECT_DOUBLE_EQ(find("all_gather").bus_factor(4), 3.0 / 4);
  EXPECT_DOUBLE_EQ(find("broadcast").bus_factor(8), 1.0);
  EXPECT_DOUBLE_EQ(find("broadcast").bus_factor(1), 0.0);  // nothing moves on one rank
  EXPECT_DOUBLE_EQ(find("all_reduce").bus_factor(1), 0.0);
  const auto bw = bandwidth(find("all_reduce"), 1e9, 0.01, 4);
  EXPECT_DOUBLE_EQ(bw.algbw, 1e11);
  EXPECT_DOUBLE_EQ(bw.busbw, 1.5e11);
  EXPECT_THROW(find("all_to_all"), ddpbench::UsageError);
}

TEST(CollectivesTable, SizeIsTheTotalArrayForReduceScatterAndAllGather) {
  const auto rs = find("reduce_scatter").layout(1 << 20, 4, 4, 3);
  EXPECT_EQ(rs.count, 262144);
  EXPECT_EQ(rs.send, 262144);
  EXPECT_EQ(rs.recv, 65536);
  EXPECT_EQ(rs.in_place_offset, 3 * 65536);
  EXPECT_EQ(rs.bytes, 1 << 20);
  const auto ag = find("all_gather").layout(1 << 20, 2, 4, 1);
  EXPECT_EQ(ag.send, 131072);
  EXPECT_EQ(ag.recv, 524288);
  EXPECT_EQ(ag.in_place_offset, 131072);
  // Rounded down to whole elements per rank, as nccl-tests does; too small to split gives count 0.
  const auto odd = find("all_gather").layout(40, 4, 4, 0);
  EXPECT_EQ(odd.count, 8);
  EXPECT_EQ(odd.bytes, 32);
  EXPECT_EQ(find("reduce_scatter").layout(8, 4, 4, 0).recv, 0);
  const auto ar = find("all_reduce").layout(1024, 2, 8, 5);
  EXPECT_EQ(ar.send, 512);
  EXPECT_EQ(ar.recv, 512);
}

// Each collective simulated from its definition on every rank's send data, against the table.
TEST(CollectivesTable, ExpectationsMatchASimulationOfEachCollective) {
  for (const auto& c : table()) {
    for (const int world : {1, 2, 3, 4, 8}) {
      if (c.name == "copy" && world > 1) continue;
      for (const std::int64_t bytes : {std::int64_t{64}, std::int64_t{4096}, std::int64_t{6000}}) {
        SCOPED_TRACE(std::string(c.name) + " world " + std::to_string(world) + " bytes " + std::to_string(bytes));
        std::vector<std::vector<double>> send;
        for (int r = 0; r < world; ++r) {
          const auto l = c.layout(bytes, 4, world, r);
          send.push_back(evaluate(send_contents(c, l, r), l.send));
        }
        for (int k = 0; k < world; ++k) {
          const auto l = c.layout(bytes, 4, world, k);
          ASSERT_GT(l.recv, 0);
          std::vector<double> want(static_cast<std::size_t>(l.recv), 0.0);
          for (std::int64_t j = 0; j < l.recv; ++j) {
            auto& w = want[static_cast<std::size_t>(j)];
            if (c.name == "all_reduce") {
              for (int r = 0; r < world; ++r) w += send[r][j];
            } else if (c.name == "reduce_scatter") {
              for (int r = 0; r < world; ++r) w += send[r][k * l.recv + j];
            } else if (c.name == "all_gather") {
              w = send[j / l.send][j % l.send];
            } else if (c.name == "broadcast") {
              w = send[0][j];
            } else {
              w = send[k][j];
            }
          }
          EXPECT_EQ(evaluate(c.expected(c.pattern, l, k, world), l.recv), want);
        }
      }
    }
  }
}

// The check must be able to fail: ranks send different data, so a block from the wrong rank or at
// the wrong offset differs from what is expected, and sums stay exact in bf16 (integers <= 256).
TEST(CollectivesTable, DataTellsRanksAndBlocksApartAndSumsStayExactInBf16) {
  const auto& ag = find("all_gather");
  const auto l = ag.layout(4096, 2, 4, 0);
  EXPECT_NE(evaluate(send_contents(ag, l, 0), l.send), evaluate(send_contents(ag, l, 1), l.send));
  const auto& rs = find("reduce_scatter");
  const auto l0 = rs.layout(4096, 2, 4, 0), l1 = rs.layout(4096, 2, 4, 1);
  EXPECT_NE(evaluate(rs.expected(rs.pattern, l0, 0, 4), l0.recv), evaluate(rs.expected(rs.pattern, l1, 1, 4), l1.recv));
  const auto& ar = find("all_reduce");
  const auto big = ar.layout(1 << 16, 2, 256, 0);
  for (const double v : evaluate(ar.expected(ar.pattern, big, 0, 256), big.recv)) {
    EXPECT_EQ(v, std::floor(v));
    EXPECT_LE(std::abs(v), 256.0);
  }
  for (const double v : evaluate(send_contents(ag, l, 3), l.send)) EXPECT_LE(v, 256.0);
}

TEST(CollectivesTable, SizesDoubleFromEightBytes) {
  const auto s = sizes(8, 4 << 20);
  ASSERT_EQ(s.size(), 20u);
  EXPECT_EQ(s.front(), 8);
  EXPECT_EQ(s.back(), 4 << 20);
  EXPECT_EQ(sizes(8, 100).back(), 64);
  EXPECT_THROW(sizes(8, 4), ddpbench::UsageError);
  EXPECT_THROW(element_bytes("fp8"), ddpbench::UsageError);
}

TEST(CollectivesResults, NonFiniteStatisticsOfGoogleBenchmarkReadAsNull) {
  const auto j = parse_gbench_json(R"({"benchmarks": [{"name": "nan/inf", "wrong": -nan, "cv": nan, "x": inf, "y": 1}]})", "f");
  const auto& b = j["benchmarks"][0];
  EXPECT_EQ(b["name"], "nan/inf");
  EXPECT_TRUE(b["wrong"].is_null());
  EXPECT_TRUE(b["cv"].is_null());
  EXPECT_TRUE(b["x"].is_null());
  EXPECT_EQ(b["y"], 1);
  EXPECT_THROW(parse_gbench_json("{", "f"), ddpbench::RunError);
}

TEST(CollectivesResults, GoogleBenchmarkJsonBecomesRowsWithMedianTimes) {
  nlohmann::json gb = {{"benchmarks", nlohmann::json::array()}};
  const std::string name = benchmark_name("all_reduce", "bf16", "in-place", 1024);
  int rep = 0;
  for (const double us : {10.0, 12.0, 11.0}) {
    gb["benchmarks"].push_back({{"name", name + "/iterations:5/repeats:3/manual_time"}, {"run_name", name + "/iterations:5/repeats:3/manual_time"},
                                {"run_type", "iteration"}, {"repetition_index", rep++}, {"real_time", us}, {"time_unit", "us"},
                                {"bytes", 1024.0}, {"count", 512.0}, {"wrong", rep == 2 ? 3.0 : 0.0}});
  }
  gb["benchmarks"].push_back({{"name", name + "_median"}, {"run_name", name}, {"run_type", "aggregate"}, {"aggregate_name", "median"},
                              {"real_time", 999.0}, {"time_unit", "us"}});
  gb["benchmarks"].push_back({{"name", benchmark_name("broadcast", "fp32", "in-place", 8)}, {"run_type", "iteration"},
                              {"real_time", 5000.0}, {"time_unit", "ns"}, {"wrong", 0.0}, {"count", 2.0}});
  const auto series = series_from_gbench(gb, 4);
  ASSERT_EQ(series.size(), 2u);
  const auto& ar = series[0];
  EXPECT_EQ(ar.collective, "all_reduce");
  ASSERT_EQ(ar.rows.size(), 1u);
  const auto& r = ar.rows[0];
  EXPECT_EQ(r.repetitions, 3);
  EXPECT_DOUBLE_EQ(r.time_s, 11e-6);
  EXPECT_DOUBLE_EQ(r.time_min_s, 10e-6);
  EXPECT_DOUBLE_EQ(r.time_max_s, 12e-6);
  EXPECT_DOUBLE_EQ(r.algbw, 1024 / 11e-6);
  EXPECT_DOUBLE_EQ(r.busbw, 1024 / 11e-6 * 1.5);
  EXPECT_EQ(r.wrong, 3);
  EXPECT_DOUBLE_EQ(series[1].rows[0].time_s, 5e-6);

  RunInfo info;
  info.run_id = "r";
  info.nproc = 4;
  info.device = "cpu";
  const auto doc = series_document(ar, info);
  EXPECT_EQ(doc["kind"], "collectives");
  EXPECT_EQ(doc["status"]["state"], "failed");
  EXPECT_EQ(doc["summary"]["wrong_elements"], 3);
  EXPECT_DOUBLE_EQ(doc["rows"][0]["busbw_GBps"].get<double>(), 1024 / 11e-6 * 1.5 / 1e9);
  const auto id = doc["cell_id"].get<std::string>();
  EXPECT_EQ(id.rfind("collectives/all_reduce/bf16/in-place/n4#", 0), 0u) << id;
  EXPECT_EQ(id.size(), std::string("collectives/all_reduce/bf16/in-place/n4#").size() + 8);
  EXPECT_EQ(doc["ranks"].size(), 4u);
  EXPECT_EQ(series_document(series[1], info)["status"]["state"], "ok");
}

}  // namespace
