// SPDX-License-Identifier: Apache-2.0
// The GEMM core with its accumulator SRAM, for synthesis estimates (bench/synth_accel.py): the
// co-simulation keeps the SRAM in the C++ simulator, here it is the RAM gemm_core.v expects --
// synchronous read, read-first, one read and one write port, so it maps onto block RAM.
// The ALU / STORE side reads rows through the same read port while the core does not
// (ext_rd_*); in the full accelerator that port is shared with them the same way.
module gemm_top #(
    parameter BATCH = 1,
    parameter BLOCK_IN = 64,
    parameter BLOCK_OUT = 16,
    parameter PIPE = 4,
    parameter ACC_DEPTH = 2048  // accumulator entries (acc_buff_bytes / (batch*block_out*4))
) (
    input wire clk,
    input wire rst,
    input wire in_valid,
    input wire in_first,
    input wire in_last,
    input wire in_reset,
    input wire in_mode,
    input wire [3:0] in_shift,
    input wire [$clog2(ACC_DEPTH)-1:0] in_addr,
    input wire [BATCH*BLOCK_IN-1:0] in_inp,
    input wire [BLOCK_OUT*BLOCK_IN-1:0] in_wgt,
    input wire ext_rd_en,
    input wire [$clog2(ACC_DEPTH)-1:0] ext_rd_addr,
    output wire [BATCH*BLOCK_OUT*32-1:0] ext_rd_data,
    output wire idle
);
  localparam AW = $clog2(ACC_DEPTH);
  localparam ROW = BATCH * BLOCK_OUT * 32;

  wire rd_en, wr_en;
  wire [AW-1:0] rd_addr, wr_addr;
  wire [ROW-1:0] wr_data;
  reg [ROW-1:0] rd_data;
  reg [ROW-1:0] mem[0:ACC_DEPTH-1];

  gemm_core #(
      .BATCH(BATCH), .BLOCK_IN(BLOCK_IN), .BLOCK_OUT(BLOCK_OUT), .ACC_W(32), .ADDR_W(AW),
      .PIPE(PIPE)
  ) u_core (
      .clk(clk), .rst(rst), .in_valid(in_valid), .in_first(in_first), .in_last(in_last),
      .in_reset(in_reset), .in_mode(in_mode), .in_shift(in_shift), .in_addr(in_addr),
      .in_inp(in_inp), .in_wgt(in_wgt), .acc_rd_en(rd_en), .acc_rd_addr(rd_addr),
      .acc_rd_data(rd_data), .acc_wr_en(wr_en), .acc_wr_addr(wr_addr), .acc_wr_data(wr_data),
      .idle(idle));

  wire port_en = rd_en | ext_rd_en;
  wire [AW-1:0] port_addr = rd_en ? rd_addr : ext_rd_addr;
  always @(posedge clk) begin
    if (port_en) rd_data <= mem[port_addr];  // read-first: the old row on a same-row write
    if (wr_en) mem[wr_addr] <= wr_data;
  end
  assign ext_rd_data = rd_data;
endmodule
