// SPDX-License-Identifier: Apache-2.0
// The GEMM core of the tvm_qnn bit-serial accelerator (docs/accelerator.md §1, design and
// timing in docs/accelerator_rtl.md). Plain Verilog-2005; yosys and verilator both read it.
//
// Per clock it takes one plane pair -- an activation entry (BATCH rows of BLOCK_IN bits) and a
// weight entry (BLOCK_OUT rows) -- with the shift i+j and the mode, and for every lane
// (b, o) accumulates  popcount(a[b] OP w[o]) << shift  into the step's running sum. A step (one
// accumulator entry, a_bits*w_bits plane pairs) reads its accumulator row at its first plane
// pair and writes it back after its last:  acc[d] += sum_{i,j} popcount(a_i OP w_j) << (i+j).
//
// The accumulator SRAM is outside: a synchronous, read-first, simple dual-port RAM (read data
// one cycle after acc_rd_en; a read and a write of the same row in one cycle return the old
// row). The core forwards its own two youngest writes, so back-to-back steps on one row (a conv
// summing over kernel positions, one cycle per step at W1A1) need no stalls.
//
// Latency: a plane pair sampled at clock edge e is in the SRAM after edge e + PIPE - 1, so a
// GEMM instruction of N plane pairs keeps the core busy N + PIPE cycles -- the cycle model's
// gemm_pipeline_cycles + steps * a_bits * w_bits with PIPE = gemm_pipeline_cycles. The stages:
//   1   input registers (plane pair and control)
//   PIPE-2 register cuts spread over the popcount adder tree (PIPE=4: after levels 3 and 6)
//   1   shift + 32-bit accumulate (the step's running sum, the write-back register)
// and the SRAM write edge. PIPE >= 2.
module gemm_core #(
    parameter BATCH = 1,
    parameter BLOCK_IN = 64,
    parameter BLOCK_OUT = 16,
    parameter ACC_W = 32,
    parameter ADDR_W = 16,
    parameter PIPE = 4
) (
    input wire clk,
    input wire rst,
    // One plane pair per cycle (in_valid=0: a bubble).
    input wire in_valid,
    input wire in_first,     // first plane pair of a step: start from the accumulator row
    input wire in_last,      // last plane pair of a step: write the row back
    input wire in_reset,     // a reset step (first=last=1): write zeros
    input wire in_mode,      // 0 XOR, 1 AND
    input wire [3:0] in_shift,  // i + j
    input wire [ADDR_W-1:0] in_addr,  // accumulator row of the step
    input wire [BATCH*BLOCK_IN-1:0] in_inp,   // row b = bits [b*BLOCK_IN +: BLOCK_IN]
    input wire [BLOCK_OUT*BLOCK_IN-1:0] in_wgt,  // row o = bits [o*BLOCK_IN +: BLOCK_IN]
    // Accumulator SRAM ports; lane b*BLOCK_OUT+o = bits [lane*ACC_W +: ACC_W].
    output wire acc_rd_en,
    output wire [ADDR_W-1:0] acc_rd_addr,
    input wire [BATCH*BLOCK_OUT*ACC_W-1:0] acc_rd_data,
    output wire acc_wr_en,
    output wire [ADDR_W-1:0] acc_wr_addr,
    output wire [BATCH*BLOCK_OUT*ACC_W-1:0] acc_wr_data,
    output wire idle         // nothing in flight: every accepted step is in the SRAM
);
  localparam LANES = BATCH * BLOCK_OUT;
  localparam LEVELS = $clog2(BLOCK_IN);  // adder levels of the popcount tree
  localparam NP = 1 << LEVELS;           // BLOCK_IN rounded up to a power of two
  localparam PCW = LEVELS + 1;           // popcount width
  localparam POP_REGS = PIPE - 2;        // registers between the input and accumulate stages
  localparam CUTS = POP_REGS < LEVELS ? POP_REGS : LEVELS;  // inside the tree
  localparam EXTRA = POP_REGS - CUTS;    // any more: a delay line after the root
  // Control word of a plane pair: {valid, first, last, reset, shift, addr}.
  localparam CTLW = 8 + ADDR_W;

  // ---- stage 0: input registers ----------------------------------------------------------
  reg [BATCH*BLOCK_IN-1:0] r_inp;
  reg [BLOCK_OUT*BLOCK_IN-1:0] r_wgt;
  reg r_mode;
  wire [CTLW-1:0] in_ctl = {in_valid, in_first, in_last, in_reset, in_shift, in_addr};
  // ctl_pipe[k*CTLW +: CTLW]: the control word of the plane pair k+1 edges after it was
  // sampled; stage POP_REGS feeds the accumulator, aligned with the popcounts.
  reg [CTLW*(POP_REGS+1)-1:0] ctl_pipe;
  always @(posedge clk) begin
    r_inp <= in_inp;
    r_wgt <= in_wgt;
    r_mode <= in_mode;
  end
  generate
    if (POP_REGS == 0) begin : g_ctl0
      always @(posedge clk) ctl_pipe <= rst ? {CTLW{1'b0}} : in_ctl;
    end else begin : g_ctln
      always @(posedge clk)
        ctl_pipe <= rst ? {(CTLW*(POP_REGS+1)){1'b0}}
                        : {ctl_pipe[CTLW*POP_REGS-1:0], in_ctl};
    end
  endgenerate

  // The stage before the accumulator issues the SRAM read (it returns one cycle later).
  wire [CTLW-1:0] pre_ctl;
  generate
    if (POP_REGS == 0) begin : g_pre0
      assign pre_ctl = in_ctl;
    end else begin : g_pren
      assign pre_ctl = ctl_pipe[CTLW*(POP_REGS-1) +: CTLW];
    end
  endgenerate
  assign acc_rd_en = pre_ctl[CTLW-1] & pre_ctl[CTLW-2] & ~pre_ctl[CTLW-4];
  assign acc_rd_addr = pre_ctl[ADDR_W-1:0];

  wire [CTLW-1:0] x_ctl = ctl_pipe[CTLW*POP_REGS +: CTLW];
  wire x_valid = x_ctl[CTLW-1];
  wire x_first = x_ctl[CTLW-2];
  wire x_last = x_ctl[CTLW-3];
  wire x_reset = x_ctl[CTLW-4];
  wire [3:0] x_shift = x_ctl[ADDR_W +: 4];
  wire [ADDR_W-1:0] x_addr = x_ctl[ADDR_W-1:0];

  // ---- accumulate stage registers ----------------------------------------------------------
  reg [LANES*ACC_W-1:0] acc_q;   // running sum of the step in flight
  reg acc_valid, acc_last;
  reg [ADDR_W-1:0] acc_addr;
  reg [LANES*ACC_W-1:0] wb_data;  // the row the SRAM took at the last edge (forwarded)

  assign acc_wr_en = acc_valid & acc_last;
  assign acc_wr_addr = acc_addr;
  assign acc_wr_data = acc_q;
  assign idle = ~acc_valid & ~|ctl_pipe_valids(ctl_pipe);

  function [POP_REGS:0] ctl_pipe_valids;
    input [CTLW*(POP_REGS+1)-1:0] p;
    integer k;
    begin
      for (k = 0; k <= POP_REGS; k = k + 1) ctl_pipe_valids[k] = p[k*CTLW + CTLW - 1];
    end
  endfunction

  // Where a step starts from: zeros (reset), the running sum (later plane pairs), or the row,
  // forwarded when one of the two youngest writes is to it (the SRAM read cannot see them).
  // The address compares are done a stage early, beside the SRAM read, and registered, so the
  // accumulate stage is only a 4-way mux and the 32-bit add. After the edge they equal
  //   fwd_acc = acc_valid & acc_last & (acc_addr == x_addr)
  //   fwd_wb  = (the SRAM took a write at the last edge) & (its row == x_addr).
  reg fwd_acc, fwd_wb;
  always @(posedge clk) begin
    fwd_acc <= ~rst & x_valid & x_last & (x_addr == acc_rd_addr);
    fwd_wb <= ~rst & acc_wr_en & (acc_addr == acc_rd_addr);
  end
  wire [1:0] base_sel = x_reset ? 2'd0 : (~x_first | fwd_acc) ? 2'd1 : fwd_wb ? 2'd2 : 2'd3;

  always @(posedge clk) begin
    if (rst) begin
      acc_valid <= 1'b0;
      acc_last <= 1'b0;
    end else begin
      acc_valid <= x_valid;
      acc_last <= x_last;
    end
    acc_addr <= x_addr;
    wb_data <= acc_q;
  end

  // ---- the lanes: xor/and, popcount tree, shift, accumulate ----------------------------------
  genvar l;
  generate
    for (l = 0; l < LANES; l = l + 1) begin : g_lane
      wire [BLOCK_IN-1:0] a = r_inp[(l / BLOCK_OUT) * BLOCK_IN +: BLOCK_IN];
      wire [BLOCK_IN-1:0] w = r_wgt[(l % BLOCK_OUT) * BLOCK_IN +: BLOCK_IN];
      wire [NP-1:0] bits = {{(NP - BLOCK_IN){1'b0}}, r_mode ? (a & w) : (a ^ w)};
      wire [PCW-1:0] pc_tree;
      popcount_tree #(.N(NP), .LEVELS(LEVELS), .CUTS(CUTS)) u_pc (
          .clk(clk), .x(bits), .y(pc_tree));
      wire [PCW-1:0] pc;
      if (EXTRA == 0) begin : g_nodelay
        assign pc = pc_tree;
      end else begin : g_delay
        reg [PCW*EXTRA-1:0] line;
        if (EXTRA == 1) begin : g_one
          always @(posedge clk) line <= pc_tree;
        end else begin : g_many
          always @(posedge clk) line <= {line[PCW*(EXTRA-1)-1:0], pc_tree};
        end
        assign pc = line[PCW*(EXTRA-1) +: PCW];
      end

      wire [ACC_W-1:0] term = x_reset ? {ACC_W{1'b0}} : ({{(ACC_W - PCW){1'b0}}, pc} << x_shift);
      reg [ACC_W-1:0] base;
      always @(*) begin
        case (base_sel)
          2'd0: base = {ACC_W{1'b0}};
          2'd1: base = acc_q[l*ACC_W +: ACC_W];
          2'd2: base = wb_data[l*ACC_W +: ACC_W];
          default: base = acc_rd_data[l*ACC_W +: ACC_W];
        endcase
      end
      always @(posedge clk) if (x_valid) acc_q[l*ACC_W +: ACC_W] <= base + term;
    end
  endgenerate
endmodule

// Popcount of N (a power of two) bits as a binary adder tree, recursively. Adder level L
// (L=1 adds pairs of bits, L=LEVELS is the root of the whole tree) ends in a register when
// floor(L*CUTS/LEVELS) steps up, so CUTS registers are spread evenly from the leaves to the root.
/* verilator lint_off DECLFILENAME */
module popcount_tree #(
    parameter N = 64,
    parameter LEVELS = 6,
    parameter CUTS = 2
) (
    /* verilator lint_off UNUSEDSIGNAL */
    input wire clk,  // unused in the leaves and in levels without a register
    /* verilator lint_on UNUSEDSIGNAL */
    input wire [N-1:0] x,
    output wire [$clog2(N):0] y
);
  localparam L = $clog2(N);
  localparam W = L + 1;
  generate
    if (N == 1) begin : g_leaf
      assign y = x;
    end else begin : g_node
      wire [W-2:0] lo, hi;
      popcount_tree #(.N(N / 2), .LEVELS(LEVELS), .CUTS(CUTS)) u_lo (
          .clk(clk), .x(x[N/2-1:0]), .y(lo));
      popcount_tree #(.N(N / 2), .LEVELS(LEVELS), .CUTS(CUTS)) u_hi (
          .clk(clk), .x(x[N-1:N/2]), .y(hi));
      wire [W-1:0] sum = {1'b0, lo} + {1'b0, hi};
      if ((L * CUTS) / LEVELS > ((L - 1) * CUTS) / LEVELS) begin : g_reg
        reg [W-1:0] q;
        always @(posedge clk) q <= sum;
        assign y = q;
      end else begin : g_comb
        assign y = sum;
      end
    end
  endgenerate
endmodule
/* verilator lint_on DECLFILENAME */
