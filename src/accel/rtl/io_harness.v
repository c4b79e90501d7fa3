// SPDX-License-Identifier: Apache-2.0
// Pin-limited wrapper for place and route (bench/synth_accel.py, nextpnr-ice40): the GEMM
// core's wide ports do not fit a package, so one serial input shifts through a register chain
// that drives every input, and every output is XOR-reduced (in two registered stages) to one
// pin. Only register-to-register paths inside gemm_top set the clock; the harness adds none
// longer than a 16-input XOR.
module io_harness #(
    parameter BATCH = 1,
    parameter BLOCK_IN = 64,
    parameter BLOCK_OUT = 4,
    parameter PIPE = 4,
    parameter ACC_DEPTH = 256
) (
    input wire clk,
    input wire rst,
    input wire sin,
    output reg sout
);
  localparam AW = $clog2(ACC_DEPTH);
  localparam IN_W = BATCH * BLOCK_IN + BLOCK_OUT * BLOCK_IN + 9 + 2 * AW + 1;
  localparam OUT_W = BATCH * BLOCK_OUT * 32 + 1;
  localparam GROUPS = (OUT_W + 15) / 16;

  reg [IN_W-1:0] sh;
  always @(posedge clk) sh <= {sh[IN_W-2:0], sin};

  wire [OUT_W-1:0] out;
  gemm_top #(
      .BATCH(BATCH), .BLOCK_IN(BLOCK_IN), .BLOCK_OUT(BLOCK_OUT), .PIPE(PIPE),
      .ACC_DEPTH(ACC_DEPTH)
  ) u_top (
      .clk(clk), .rst(rst),
      .in_valid(sh[0]), .in_first(sh[1]), .in_last(sh[2]), .in_reset(sh[3]), .in_mode(sh[4]),
      .in_shift(sh[8:5]), .in_addr(sh[9 +: AW]),
      .in_inp(sh[9 + AW +: BATCH * BLOCK_IN]),
      .in_wgt(sh[9 + AW + BATCH * BLOCK_IN +: BLOCK_OUT * BLOCK_IN]),
      .ext_rd_en(sh[IN_W - 1 - AW]), .ext_rd_addr(sh[IN_W - AW +: AW]),
      .ext_rd_data(out[OUT_W-1:1]), .idle(out[0]));

  reg [OUT_W-1:0] q;
  reg [GROUPS-1:0] part;
  wire [GROUPS*16-1:0] padded = {{(GROUPS * 16 - OUT_W){1'b0}}, q};
  integer g;
  always @(posedge clk) begin
    q <= out;
    for (g = 0; g < GROUPS; g = g + 1) part[g] <= ^padded[g*16 +: 16];
    sout <= ^part;
  end
endmodule
