namespace Quantization.Onnx;

/// <summary>Whether <see cref="OnnxModel.Save"/> writes tensor data into a separate data file next to the model.</summary>
public enum ExternalDataPolicy
{
    /// <summary>
    /// External when the model would not fit inline: its serialized size with every tensor inline would exceed
    /// <see cref="OnnxSaveOptions.AutoExternalDataLimit"/>, or it already stores tensors externally (which then keep
    /// being stored so, copied into the new data file). Otherwise everything is written inline, as <see cref="Never"/>.
    /// </summary>
    Auto = 0,

    /// <summary>Every initializer and Constant-node value of at least <see cref="OnnxSaveOptions.SizeThreshold"/> bytes, and every tensor already stored externally, goes to the data file.</summary>
    Always = 1,

    /// <summary>
    /// Everything inline, externally stored tensors included (they are read in); a model that would exceed
    /// <see cref="OnnxSaveOptions.ProtobufSizeLimit"/> is refused with an <see cref="InvalidOperationException"/>
    /// before anything is written.
    /// </summary>
    Never = 2,
}
