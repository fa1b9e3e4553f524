using System.Runtime.InteropServices;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// Writes ONNX Runtime's <c>com.microsoft.MatMulNBits</c>: <c>Y = A · dequant(B)ᵀ (+ bias)</c> with B the weight as
/// [N, K] in blocks of <c>block_size</c> along K. Stored as B uint8 [N, k_blocks, block_size·bits/8] (codes packed
/// along K, the first in the low bits), scales float [N, k_blocks], zero points absent (meaning 2^(bits−1), the
/// symmetric case) or uint8 [N, ceil(k_blocks·bits/8)]. Only 8-bit codes are written so far; the bit width is a
/// parameter so that packed narrower codes can share the layout.
/// </summary>
internal static class MatMulNBitsWriter
{
    /// <summary>The operator's domain.</summary>
    public const string Domain = "com.microsoft";

    /// <summary>The code widths the writer packs.</summary>
    private static readonly int[] SupportedBits = [8];

    /// <summary>
    /// Quantizes a weight given as rows of K inputs per output channel ([N, K] row-major) in blocks along K, with the
    /// library's kernels: the rows are zero-padded to whole blocks and quantized per group of <paramref name="blockSize"/>
    /// on axis 1 with <paramref name="scheme"/>'s type, symmetry and convention.
    /// </summary>
    /// <returns>The quantized [N, k_blocks·block_size] tensor.</returns>
    public static QuantizedTensor QuantizeBlocks(ReadOnlySpan<float> rows, int n, int k, int blockSize, QuantizationScheme scheme, string name)
    {
        int padded = checked((k + blockSize - 1) / blockSize * blockSize);
        float[] values = new float[checked(n * padded)];
        for (int row = 0; row < n; row++)
        {
            rows.Slice(row * k, k).CopyTo(values.AsSpan(row * padded, k));
        }

        return QuantizedTensor.Quantize(values, [n, padded], scheme.WithGranularity(QuantizationGranularity.PerGroup(blockSize, axis: 1)), name);
    }

    /// <summary>The dequantized weight in rows of K ([N, K]), the padding dropped.</summary>
    public static float[] DequantizeRows(QuantizedTensor blocks, int k)
    {
        int n = blocks.Shape[0], padded = blocks.Shape[1];
        float[] all = blocks.Dequantize(), rows = new float[checked(n * k)];
        for (int row = 0; row < n; row++)
        {
            all.AsSpan(row * padded, k).CopyTo(rows.AsSpan(row * k));
        }

        return rows;
    }

    /// <summary>
    /// Turns <paramref name="node"/> (in place, keeping its name and output) into a MatMulNBits of
    /// <paramref name="input"/> by the quantized blocks, with an optional bias of N floats; returns the bytes stored.
    /// </summary>
    /// <exception cref="NotSupportedException">The bit width or the blocks' type is not one the writer packs.</exception>
    public static long Write(OnnxGraphEditor editor, NodeProto node, string input, QuantizedTensor blocks, int k, int bits, int accuracyLevel, string? bias)
    {
        if (!SupportedBits.Contains(bits) || blocks.Scheme.Type != QuantizedType.Int8)
        {
            throw new NotSupportedException($"Node '{node.Name}': MatMulNBits is written from int8 codes with bits = 8; not {blocks.Scheme.Type} with bits = {bits}.");
        }

        int n = blocks.Shape[0], blockSize = blocks.Scheme.Granularity.GroupSize, kBlocks = blocks.Shape[1] / blockSize;
        string name = node.Input[1];

        // Signed codes q in [-128, 127] are stored as q + 2^(bits-1), so a zero point z becomes z + 2^(bits-1).
        byte offset = (byte)(1 << (bits - 1));
        byte[] codes = blocks.Data.ToArray();
        for (int i = 0; i < codes.Length; i++)
        {
            codes[i] = (byte)(codes[i] + offset);
        }

        string packed = editor.AddInitializer(name + "_MatMulNBits_B", TensorProto.Types.DataType.Uint8, [n, kBlocks, blockSize * bits / 8], codes);
        string scales = editor.AddInitializer(name + "_MatMulNBits_scales", TensorProto.Types.DataType.Float, [n, kBlocks], MemoryMarshal.AsBytes(blocks.Parameters.Scales));
        long bytes = codes.Length + (blocks.Parameters.Count * (long)sizeof(float));
        string zeroPoints = string.Empty;
        if (!blocks.Scheme.Symmetric)
        {
            byte[] points = [.. blocks.Parameters.ZeroPoints.ToArray().Select(z => (byte)(z + offset))];
            zeroPoints = editor.AddInitializer(name + "_MatMulNBits_zero_points", TensorProto.Types.DataType.Uint8, [n, kBlocks * bits / 8], points);
            bytes += points.Length;
        }

        node.OpType = "MatMulNBits";
        node.Domain = Domain;
        node.Input.Clear();
        node.Input.Add([input, packed, scales]);
        if (bias is not null)
        {
            node.Input.Add([zeroPoints, string.Empty, bias]);
        }
        else if (zeroPoints.Length > 0)
        {
            node.Input.Add(zeroPoints);
        }

        node.Attribute.Clear();
        node.Attribute.Add([Int("K", k), Int("N", n), Int("bits", bits), Int("block_size", blockSize), Int("accuracy_level", accuracyLevel)]);
        return bytes;
    }

    /// <summary>Makes the model import the operator's domain (version 1) if it does not yet.</summary>
    public static void ImportDomain(OnnxModel model)
    {
        if (!model.Proto.OpsetImport.Any(o => o.Domain == Domain))
        {
            model.Proto.OpsetImport.Add(new OperatorSetIdProto { Domain = Domain, Version = 1 });
        }
    }

    private static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };
}
