using Microsoft.Extensions.Logging;
using Microsoft.ML.OnnxRuntime;

namespace Quantization.Onnx;

/// <summary>How the quantizers run calibration data through ONNX Runtime.</summary>
public sealed class OnnxCalibrationOptions
{
    /// <summary>Gets or sets ONNX Runtime's options for the calibration session (threads, optimisation level); its defaults when <see langword="null"/>. The caller keeps ownership.</summary>
    public SessionOptions? SessionOptions { get; set; }

    /// <summary>Gets or sets where calibration logs go; nowhere when <see langword="null"/>.</summary>
    public ILogger? Logger { get; set; }
}
