namespace Quantization.Onnx;

/// <summary>
/// How <see cref="OnnxWeightQuantizer"/> writes MatMul and Gemm weights as ONNX Runtime's
/// <c>com.microsoft.MatMulNBits</c> (set <see cref="OnnxWeightQuantizationOptions.MatMulNBits"/>): 8-bit codes in
/// blocks of <see cref="BlockSize"/> consecutive inputs of one output channel, each block with its own scale (and zero
/// point when the scheme is asymmetric). ONNX Runtime runs such a node from the packed weight, without materialising a
/// float copy of it on every inference as DequantizeLinear + MatMul does.
/// </summary>
/// <remarks>
/// The blocks are quantized with this library's kernels and the weight scheme's convention (ONNX's by default): for the
/// symmetric default, scale = 2·max|w| / 254 per block (computed in double, stored as float, so never negative), codes
/// q = round_half_even(w / scale) in [-127, 127] stored as q + 128, and no zero-point input (ONNX Runtime then assumes
/// 128); asymmetric schemes store codes and zero points offset by 128 the same way. ONNX Runtime's own block quantizer
/// (MLAS, used by its Python <c>MatMulNBitsQuantizer</c>) differs: it multiplies by the reciprocal of the scale and
/// rounds half away from zero, and in symmetric mode it keeps the sign of the block's largest-magnitude value, so its
/// scales can be negative; its codes differ from these by one step on ties. Either way ONNX Runtime dequantizes
/// (code − zero point) · scale, which is exactly this library's dequantized weight.
/// </remarks>
public sealed class MatMulNBitsOptions
{
    private int _blockSize = 32;
    private int _accuracyLevel = 4;

    /// <summary>
    /// Gets or sets the number of consecutive inputs (along K) that share a scale: a power of two, at least 16; 32 by
    /// default, the block ONNX Runtime itself uses when it fuses int8 DequantizeLinear + MatMul. Smaller blocks follow the
    /// weights, and at accuracy level 4 the activations, more closely: on all-MiniLM-L6-v2 at level 4, blocks of 32 keep
    /// the sentence embeddings at mean cosine 0.99963 and blocks of 128 at 0.99897, with speeds within the measurement
    /// noise of each other. K is zero-padded to a whole number of blocks.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not a power of two of at least 16.</exception>
    public int BlockSize
    {
        get => _blockSize;
        set => _blockSize = value >= 16 && int.IsPow2(value) ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "MatMulNBits blocks are a power of two of at least 16.");
    }

    /// <summary>
    /// Gets or sets the node's <c>accuracy_level</c>, the arithmetic ONNX Runtime's CPU kernel uses for the activation
    /// A: 0 unset (the kernel's default, fp32 on CPU), 1 fp32, 2 fp16, 3 bf16, 4 int8 (A is quantized on the fly per
    /// block of K to int8 with scale max|A|/127, and the dot products run on the integer units). 4 by default: in ONNX
    /// Runtime 1.31 it is the fast path (all-MiniLM-L6-v2 on one thread: about 1.5 times faster than fp32, where level 1
    /// is about 3 times slower than fp32, as 8-bit weights have no fast fp32 kernel), and it is what ONNX Runtime's default
    /// optimisation level does to weight-only QDQ MatMuls anyway (the same sentence embeddings within 0.0004 of cosine on
    /// that model). The model is then W8A8 with dynamic activations at every optimisation level. Level 1 computes exactly
    /// what DequantizeLinear + MatMul computes (the dequantized weight times A in fp32). ONNX Runtime's optimisation level
    /// does not change an explicit MatMulNBits node's level (the session option of
    /// <see cref="SessionOptionsExtensions.MatMulNBitsAccuracyLevelKey"/> applies only to the MatMulNBits it fuses from
    /// QDQ weights).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is outside [0, 4].</exception>
    public int AccuracyLevel
    {
        get => _accuracyLevel;
        set => _accuracyLevel = value is >= 0 and <= 4 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "MatMulNBits accuracy levels are 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) and 4 (int8).");
    }
}
